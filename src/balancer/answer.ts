/**
 * An upstream's answer on its way to the client. For the common answer — an HTTP/1.1 client whose
 * connection is serving this very response, and an answer with a length or no body — the balancer
 * serializes the head itself and sends it with the first body bytes in one write, the rest of the
 * body straight to the socket, then ends the ServerResponse so node:http goes on with the
 * connection (keep-alive, the next request) as usual. Every other answer (chunked, an HTTP/1.0
 * client, a pipelined request waiting its turn) goes through ServerResponse.writeHead and write.
 * The direct path sets the ServerResponse fields node:http itself sets when it writes a head
 * (`_header`, `_headerSent`, `_last`), so `headersSent`, finishing and keep-alive behave the same.
 */
import { type IncomingMessage, type ServerResponse, STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'

/** Bodies up to this size leave with the head as one string, in one write. */
const SMALL_BODY = 16 * 1024

/** The fields of Node's ServerResponse (OutgoingMessage) a head written by hand must set. */
interface RawResponse {
  _header: string | null
  _headerSent: boolean
  _last: boolean
  shouldKeepAlive: boolean
}

let dateSecond = 0
let dateText = ''

/** The HTTP date of now, made once a second. */
function httpDate(): string {
  const now = Date.now()
  const second = Math.floor(now / 1000)
  if (second !== dateSecond) {
    dateSecond = second
    dateText = new Date(now).toUTCString()
  }
  return dateText
}

export interface AnswerHead {
  readonly status: number
  /** Flat [name, value, …], hop-by-hop headers left out already. */
  readonly headers: string[]
  readonly hasLength: boolean
  readonly hasDate: boolean
  /** The client's connection must close after this answer (its request body was not read whole). */
  readonly close: boolean
}

export class ClientAnswer {
  readonly #res: ServerResponse
  readonly #req: IncomingMessage
  readonly #keepAliveSeconds: number
  /** The client's socket when the head is written by hand. */
  #socket: Socket | null = null

  constructor(req: IncomingMessage, res: ServerResponse, keepAliveTimeoutMs: number) {
    this.#req = req
    this.#res = res
    this.#keepAliveSeconds = Math.floor(keepAliveTimeoutMs / 1000)
  }

  /** Where 'drain' comes once a write returned false. */
  get drainSource(): NodeJS.EventEmitter {
    return this.#socket ?? this.#res
  }

  /** Takes the answer's head (written with the first body bytes). Throws when node:http refuses a header. */
  head(h: AnswerHead, noBody: boolean): void {
    const res = this.#res
    const socket = res.socket as (Socket & { _httpMessage?: unknown }) | null
    const direct =
      socket !== null && socket._httpMessage === res && this.#req.httpVersionMajor === 1 && this.#req.httpVersionMinor === 1 && (h.hasLength || noBody || h.status === 204 || h.status === 304)
    if (!direct) {
      if (h.close) h.headers.push('connection', 'close')
      res.writeHead(h.status, h.headers)
      return
    }
    const raw = res as unknown as RawResponse
    let text = `HTTP/1.1 ${h.status} ${STATUS_CODES[h.status] ?? 'unknown'}\r\n`
    const headers = h.headers
    for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`
    if (!h.hasDate) text += `Date: ${httpDate()}\r\n`
    if (!h.close && raw.shouldKeepAlive) {
      text += `Connection: keep-alive\r\nKeep-Alive: timeout=${this.#keepAliveSeconds}\r\n\r\n`
    } else {
      text += 'Connection: close\r\n\r\n'
      raw._last = true
    }
    res.statusCode = h.status
    raw._header = text
    this.#socket = socket
  }

  /** Writes `chunks` (and the head, first time), emptying the array; false when the client's buffer is full. */
  write(chunks: Buffer[]): boolean {
    const socket = this.#socket
    let ok = true
    if (socket === null) {
      for (const chunk of chunks) ok = this.#res.write(chunk)
      chunks.length = 0
      return ok
    }
    const raw = this.#res as unknown as RawResponse
    if (!raw._headerSent) {
      raw._headerSent = true
      const first = chunks.length > 0 && chunks[0]!.length <= SMALL_BODY ? chunks.shift()!.toString('latin1') : ''
      ok = socket.write(raw._header + first, 'latin1')
    }
    for (const chunk of chunks) ok = socket.write(chunk)
    chunks.length = 0
    return ok
  }

  /** Writes the last `chunks` and ends the response. */
  end(chunks: Buffer[]): void {
    if (this.#socket === null && chunks.length === 1 && chunks[0]!.length <= SMALL_BODY) {
      // One write: `end(chunk)` would add an empty write for its callback, and the two would leave as a writev.
      this.#res.write(chunks.pop()!.toString('latin1'), 'latin1')
    } else {
      this.write(chunks)
    }
    this.#res.end()
  }
}
