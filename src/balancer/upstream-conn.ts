/**
 * One keep-alive socket to an upstream and the reading of its answers, which Node's own llhttp
 * binding parses (the strict parser node:http uses), reading the socket directly in C++ as
 * node:http's server does. A connection can be pooled again only after an answer read to its end
 * that allows keep-alive, with nothing unasked after it; any other is destroyed. Written by hand:
 * no maintained library relays by membership with sticky pins over raw pooled sockets, and
 * undici's client was most of the balancer's CPU per request.
 */
import { createRequire } from 'node:module'
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { Machine } from '../util/machine.js'

/**
 * A connection's states:
 * - connecting: its socket is opening, for the exchange that asked for it (which may write already);
 * - busy: one exchange owns it: its request is being written, its answer read;
 * - idle: in the pool, kept alive for the next exchange;
 * - closed: destroyed, never used again.
 */
const enteredFrom = {
  connecting: [],
  busy: ['connecting', 'idle'],
  idle: ['busy'],
  closed: ['connecting', 'busy', 'idle'],
} as const
export type ConnState = keyof typeof enteredFrom

export function connMachine(name: string): Machine<ConnState> {
  return new Machine<ConnState>(name, enteredFrom, 'connecting')
}

/** An idle socket is closed after this long at most, whatever the instance's hint. */
const IDLE_MAX_MS = 30_000
/** Closed this long before the instance's keep-alive hint: it must not close a socket just reused. */
const IDLE_MARGIN_MS = 2000
/** Codes of a failure before anything reached the instance: another member may be tried. */
const NOT_SENT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'CONNECT_TIMEOUT', 'POOL_FULL', 'POOL_CLOSED', 'QUEUE_TIMEOUT'])
/** Codes that say the instance is not there: it is ejected. */
const EJECT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'CONNECT_TIMEOUT', 'ECONNRESET', 'EPIPE', 'CLOSED'])

/** An exchange with an upstream failed; `code` is a socket code, an llhttp `HPE_` code or one of the pool's. */
export class UpstreamError extends Error {
  readonly code: string
  /** Nothing reached the instance: the request may go to another member whatever its method. */
  readonly notSent: boolean
  /** The instance looks gone (refused, unreachable, reset a fresh connection): leave it out a while. */
  readonly eject: boolean

  constructor(code: string, message: string, opts: { reused?: boolean } = {}) {
    super(message)
    this.code = code
    this.notSent = NOT_SENT.has(code)
    // A kept-alive socket the instance closed as it was reused says nothing about the instance.
    this.eject = EJECT.has(code) && !(opts.reused && (code === 'ECONNRESET' || code === 'EPIPE' || code === 'CLOSED'))
  }
}

/** What reading an answer tells the exchange that owns a connection. Called in this order. */
export interface AnswerSink {
  /** The final answer's head (1xx answers are skipped): status and flat [name, value, …] headers. */
  head(status: number, rawHeaders: string[]): void
  /** A piece of the answer's body. */
  body(chunk: Buffer): void
  /** After each read: what arrived may be written on; `ended` when the answer is complete. */
  parsed(ended: boolean): void
  /** The connection failed before the answer ended (it is closed already). */
  failed(err: UpstreamError): void
}

type ParseResult = number | (Error & { code?: string })
interface Parser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void
  execute(data: Buffer): ParseResult
  finish(): undefined | (Error & { code?: string })
  consume(handle: StreamHandle): void
  unconsume(): void
  close(): void
  [callback: number]: unknown
}
/** A socket's native handle, which the parser can read from directly (as node:http's server does). */
interface StreamHandle {
  readonly isStreamBase?: boolean
  _consumed?: boolean
  reading: boolean
  readStart(): number
  readStop(): number
}
interface ParserClass {
  new (): Parser
  readonly RESPONSE: number
  readonly kOnHeaders: number
  readonly kOnHeadersComplete: number
  readonly kOnBody: number
  readonly kOnMessageComplete: number
  readonly kOnExecute: number
}
const { HTTPParser } = createRequire(import.meta.url)('_http_common') as { HTTPParser: ParserClass }
const SKIP_BODY = 1
const closeParser = (parser: Parser) => parser.close()

export interface PoolTarget {
  readonly host: string
  readonly port: number
  readonly secure: boolean
}
/** The pool a connection belongs to (upstream-pool.ts). */
export interface ConnOwner {
  /** A connection free for the next exchange. */
  reuse(conn: Conn): void
  /** A connection closed (it was `was`). */
  closed(conn: Conn, was: ConnState): void
}

/** One socket to an upstream and the parser of its answers. */
export class Conn {
  readonly socket: Socket
  readonly #pool: ConnOwner | null
  readonly #parser: Parser
  readonly #machine: Machine<ConnState>
  #sink: AnswerSink | null = null
  #connected = false
  #connectTimer: NodeJS.Timeout | null
  /** The socket's handle when the parser reads it directly (no 'data' events). */
  #handle: StreamHandle | null = null
  #readPaused = false
  /** Per answer: a HEAD request's answer has no body. */
  #skipBody = false
  #informational = false
  #ended = false
  #keepAlive = false
  /** Bytes came after the answer: the socket cannot be trusted with another. */
  #unasked = false
  /** The instance switched protocols unasked: nothing more can be read as HTTP. */
  #switched = false
  #partial: string[] | null = null
  /** Answers this socket carried: a reused socket's reset is the instance's keep-alive, not its death. */
  served = 0
  /** How long it may stay idle (the instance's hint, see keepAliveHint). */
  idleMs = IDLE_MAX_MS
  #hint = ''
  idleSince = 0

  constructor(target: PoolTarget, pool: ConnOwner | null, connectTimeoutMs: number, maxHeaderBytes: number) {
    this.#pool = pool
    this.#machine = connMachine(`connection to ${target.host}:${target.port}`)
    this.socket = target.secure ? tlsConnect({ host: target.host, port: target.port, servername: target.host }) : netConnect({ host: target.host, port: target.port })
    this.socket.setNoDelay(true)
    this.#connectTimer = setTimeout(() => this.#fail(new UpstreamError('CONNECT_TIMEOUT', `connecting took over ${connectTimeoutMs} ms`)), connectTimeoutMs)
    this.socket.once(target.secure ? 'secureConnect' : 'connect', () => {
      this.#connected = true
      if (this.#connectTimer) clearTimeout(this.#connectTimer)
      this.#connectTimer = null
    })
    const parser = new HTTPParser()
    parser.initialize(HTTPParser.RESPONSE, {}, maxHeaderBytes, 0)
    parser[HTTPParser.kOnHeaders] = (headers: string[]) => {
      this.#partial = this.#partial ? this.#partial.concat(headers) : headers
    }
    parser[HTTPParser.kOnHeadersComplete] = this.#onHeadersComplete
    parser[HTTPParser.kOnBody] = (chunk: Buffer) => {
      if (this.#ended) this.#unasked = true
      else if (!this.#informational) this.#sink?.body(chunk)
    }
    parser[HTTPParser.kOnMessageComplete] = () => {
      if (this.#informational) this.#informational = false
      else this.#ended = true
    }
    this.#parser = parser
    // Plain TCP: the parser reads the socket in C++ and calls back once per read, like node:http's
    // server; no stream machinery per read. ('data' still listens: it keeps the socket flowing.)
    const handle = (this.socket as unknown as { _handle?: StreamHandle })._handle
    if (!target.secure && handle?.isStreamBase && !handle._consumed) {
      handle._consumed = true
      parser.consume(handle)
      parser[HTTPParser.kOnExecute] = this.#parsed
      this.#handle = handle
    }
    this.socket.on('data', this.#onData)
    this.socket.on('end', this.#onEnd)
    this.socket.on('error', (err: NodeJS.ErrnoException) => this.#fail(new UpstreamError(this.#connected ? err.code ?? 'ECONNRESET' : err.code ?? 'ECONNREFUSED', err.message, { reused: this.served > 0 })))
    this.socket.on('close', () => this.#fail(new UpstreamError('CLOSED', 'the instance closed the connection', { reused: this.served > 0 })))
  }

  get state(): ConnState {
    return this.#machine.state
  }

  /** Gives the connection to one exchange; `skipBody` for a HEAD request. */
  assign(sink: AnswerSink, skipBody: boolean): void {
    this.#machine.to('busy')
    this.#sink = sink
    this.#skipBody = skipBody
    this.#ended = false
    this.#informational = false
    this.#keepAlive = false
  }

  /**
   * The exchange is done with the connection: pooled again when `reusable` (its request was written
   * whole) and the answer allows it, else destroyed.
   */
  release(reusable: boolean): void {
    this.#sink = null
    this.served++
    if (!reusable || !this.#ended || !this.#keepAlive || this.#unasked || this.idleMs <= 0 || !this.#pool || this.#machine.state !== 'busy') return this.destroy()
    this.#pool.reuse(this)
  }

  /** From the pool: the connection waits for the next exchange. */
  toIdle(): void {
    this.#machine.to('idle')
  }

  /** Stops reading the answer (the client is slow); `resumeReading` goes on. */
  pauseReading(): void {
    this.#readPaused = true
    if (!this.#handle) return void this.socket.pause()
    this.#handle.reading = false
    this.#handle.readStop()
  }

  resumeReading(): void {
    if (!this.#readPaused) return
    this.#readPaused = false
    if (!this.#handle) return void this.socket.resume()
    this.#handle.reading = true
    this.#handle.readStart()
  }

  /** The instance's `Keep-Alive: timeout=N` (seconds), read from an answer's headers. */
  keepAliveHint(value: string): void {
    if (value === this.#hint) return // the same on every answer
    this.#hint = value
    const m = /timeout=(\d+)/i.exec(value)
    this.idleMs = m ? Math.min(IDLE_MAX_MS, Number(m[1]) * 1000 - IDLE_MARGIN_MS) : IDLE_MAX_MS
  }

  /** Closes the socket at once; the exchange using it, if any, is not told (it asked, or it was told already). */
  destroy(): void {
    if (this.#machine.state === 'closed') return
    const was = this.#machine.state
    this.#machine.to('closed')
    this.#sink = null
    if (this.#connectTimer) clearTimeout(this.#connectTimer)
    if (this.#handle) this.#parser.unconsume()
    this.#handle = null
    this.socket.destroy()
    // Not now: this may run inside one of the parser's callbacks.
    setImmediate(closeParser, this.#parser)
    this.#pool?.closed(this, was)
  }

  /** Whether a callback closed the connection (TypeScript cannot see that state change). */
  #closedNow(): boolean {
    return this.#machine.state === 'closed'
  }

  #fail(err: UpstreamError): void {
    const sink = this.#sink
    this.destroy()
    sink?.failed(err)
  }

  readonly #onHeadersComplete = (
    _major: number,
    _minor: number,
    headers: string[] | undefined,
    _method: unknown,
    _url: unknown,
    status: number,
    _message: string,
    upgrade: boolean,
    keepAlive: boolean,
  ): number => {
    const all = headers ?? this.#partial ?? []
    this.#partial = null
    if (this.#ended || !this.#sink) {
      this.#unasked = true
      return SKIP_BODY
    }
    if (status < 200 && status !== 101) {
      this.#informational = true // 100 Continue, 103 Early Hints: not relayed, the answer follows
      return SKIP_BODY
    }
    if (upgrade || status === 101) {
      this.#switched = true // only upgrades (tunnel.ts) may switch protocols
      return SKIP_BODY
    }
    this.#keepAlive = keepAlive
    this.#sink.head(status, all)
    return this.#skipBody ? SKIP_BODY : 0
  }

  readonly #onData = (chunk: Buffer): void => {
    this.#parsed(this.#parser.execute(chunk))
  }

  /** After the parser read what arrived (its callbacks ran). */
  readonly #parsed = (r: ParseResult): void => {
    if (this.#closedNow()) return
    if (this.#machine.state !== 'busy' || !this.#sink) return this.destroy() // bytes nobody asked for
    if (typeof r !== 'number') return this.#fail(new UpstreamError(r.code ?? 'HPE_INVALID', `the instance's answer is not valid HTTP: ${r.message}`))
    if (this.#switched) return this.#fail(new UpstreamError('HPE_UNEXPECTED', 'the instance switched protocols unasked'))
    this.#sink?.parsed(this.#ended)
  }

  /** The instance finished sending: an answer read until the close ends here (or is cut short). */
  readonly #onEnd = (): void => {
    if (this.#machine.state !== 'busy' || !this.#sink) return this.destroy()
    const r = this.#parser.finish()
    if (this.#closedNow()) return
    if (r !== undefined || !this.#ended) return this.#fail(new UpstreamError('CLOSED', 'the instance closed the connection before its answer ended', { reused: this.served > 0 }))
    this.#keepAlive = false
    this.#sink.parsed(true)
  }
}
