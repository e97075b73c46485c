/**
 * Server-sent events to the open dashboard pages. Each frame is serialised once and written to
 * every client; a client whose unsent data passes a limit (a stalled tab) is dropped rather than
 * buffered without end, and a client whose session or token expires or ends (sign-out, revocation)
 * is closed. Comments keep proxies from timing the stream out.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { SECURITY_HEADERS } from './http.js'

interface Client {
  readonly res: ServerResponse
  readonly expiresAt: number
  /** The session or token the stream was opened with (`s:<id>`, `t:<id>`), or null. */
  readonly owner: string | null
}

export class EventStream {
  readonly #clients = new Set<Client>()
  readonly #maxClients: number
  readonly #maxBuffered: number
  readonly #ping: NodeJS.Timeout

  constructor(opts: { maxClients?: number; maxBufferedBytes?: number; pingMs?: number } = {}) {
    this.#maxClients = opts.maxClients ?? 200
    this.#maxBuffered = opts.maxBufferedBytes ?? 4 * 1024 * 1024
    this.#ping = setInterval(() => this.#write(': ping\n\n'), opts.pingMs ?? 15_000)
    this.#ping.unref()
  }

  get size(): number {
    return this.#clients.size
  }

  /** Opens a stream on `res`, sends `initial` frames, and keeps it until the client leaves, `expiresAt`, or `closeOwner(owner)`. */
  open(req: IncomingMessage, res: ServerResponse, initial: readonly string[], expiresAt = Number.POSITIVE_INFINITY, owner: string | null = null): boolean {
    if (this.#clients.size >= this.#maxClients) return false
    res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' })
    res.write('retry: 2000\n\n')
    for (const f of initial) res.write(f)
    const client = { res, expiresAt, owner }
    this.#clients.add(client)
    const drop = () => this.#clients.delete(client)
    req.once('close', drop)
    res.once('close', drop)
    return true
  }

  /** Sends `data` (serialised once) as an event named `event` to every client. */
  broadcast(event: string, data: unknown): void {
    this.#write(frame(event, data))
  }

  #write(text: string): void {
    const now = Date.now()
    for (const c of this.#clients) {
      if (c.expiresAt <= now || c.res.writableLength > this.#maxBuffered) {
        this.#clients.delete(c)
        c.res.end()
        continue
      }
      c.res.write(text)
    }
  }

  /** The sessions and tokens that have streams open. */
  owners(): Set<string> {
    const owners = new Set<string>()
    for (const c of this.#clients) if (c.owner !== null) owners.add(c.owner)
    return owners
  }

  /** Ends every stream opened with `owner` (its session was signed out, its token revoked). */
  closeOwner(owner: string): void {
    for (const c of this.#clients) {
      if (c.owner !== owner) continue
      this.#clients.delete(c)
      c.res.end()
    }
  }

  close(): void {
    clearInterval(this.#ping)
    for (const c of this.#clients) c.res.end()
    this.#clients.clear()
  }
}

/** One SSE frame. JSON never contains a raw newline, so one `data:` line suffices. */
export function frame(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`
}
