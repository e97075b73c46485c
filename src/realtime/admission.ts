/**
 * Who may open a WebSocket to the gateway, decided at the upgrade before any work is done. The
 * page's `Origin` must be this server's own origin (or one the app lists), so a foreign site cannot
 * ride a signed-in user's cookies (cross-site WebSocket hijacking); and no client address or
 * principal may hold more than its share of this instance's connections. A refusal is answered in
 * HTTP with the error code in the body, and the socket is closed at once: nothing is left open.
 */
import type { IncomingMessage } from 'node:http'
import { isIP } from 'node:net'
import type { Duplex } from 'node:stream'
import { ChorusError, type ErrorCode } from '../errors.js'

/**
 * Origins allowed besides the request's own: full origins (`https://app.example.com`, `null` for
 * opaque origins), or `'*'` for any origin at all (only for an endpoint that trusts no cookie).
 */
export type AllowedOrigins = '*' | readonly string[]

export type OriginCheck = (request: IncomingMessage) => { ok: true } | { ok: false; why: string }

/**
 * The origin rule of one attachment: a request without `Origin` (not a browser: browsers always
 * send it on a WebSocket handshake) passes; a request whose `Origin` names the host it was sent to
 * (`Host`, same port; the scheme is not compared, since TLS usually ends at a proxy) passes; any
 * other origin passes only when listed.
 */
export function originCheck(allowed: AllowedOrigins | undefined): OriginCheck {
  if (allowed === '*') return () => ({ ok: true })
  const listed = new Set<string>()
  if (allowed !== undefined) {
    if (!Array.isArray(allowed)) throw invalid('must be "*" or an array of origins')
    for (const o of allowed) listed.add(normalizeListed(o))
  }
  return (request) => {
    const raw = request.headers.origin
    if (raw === undefined) return { ok: true }
    const origin = raw.trim().toLowerCase()
    if (listed.has(origin)) return { ok: true }
    if (origin === 'null') return { ok: false, why: 'an opaque origin ("null")' }
    let url: URL
    try {
      url = new URL(origin)
    } catch {
      return { ok: false, why: 'an unparsable Origin' }
    }
    if (listed.has(url.origin)) return { ok: true }
    if (sameHost(url, request.headers.host)) return { ok: true }
    return { ok: false, why: `origin ${url.origin.slice(0, 200)} is neither this server nor in allowedOrigins` }
  }
}

function normalizeListed(o: unknown): string {
  if (typeof o !== 'string') throw invalid('entries must be strings such as "https://app.example.com"')
  const s = o.trim().toLowerCase()
  if (s === 'null') return s
  let url: URL
  try {
    url = new URL(s)
  } catch {
    throw invalid(`${JSON.stringify(o)} is not an origin such as "https://app.example.com"`)
  }
  if (url.origin === 'null' || url.pathname !== '/' || url.search || url.hash || url.username || url.password || s.endsWith('/')) {
    throw invalid(`${JSON.stringify(o)} is not an origin (scheme://host[:port], nothing after it)`)
  }
  return url.origin
}

const DEFAULT_PORTS: Record<string, string> = { 'http:': '80', 'https:': '443', 'ws:': '80', 'wss:': '443' }

/** Whether `origin` names the host and port of the `Host` header (a port-less Host means the origin scheme's default). */
function sameHost(origin: URL, host: string | undefined): boolean {
  if (!host) return false
  let target: URL
  try {
    target = new URL(`http://${host.trim()}`)
  } catch {
    return false
  }
  if (target.username || target.password || target.pathname !== '/') return false
  const defaultPort = DEFAULT_PORTS[origin.protocol]
  if (defaultPort === undefined) return false
  const originPort = origin.port || defaultPort
  // `new URL('http://h:80')` drops the port; read it from the header itself.
  const m = /:(\d{1,5})$/.exec(host.trim())
  const hostPort = m && !host.trim().endsWith(']') ? String(Number(m[1])) : defaultPort
  return origin.hostname === target.hostname.toLowerCase() && originPort === hostPort
}

function invalid(why: string): ChorusError {
  return new ChorusError('CHORUS_ERR_OPTIONS_INVALID', ['allowedOrigins', why], { details: { option: 'allowedOrigins' } })
}

/**
 * The client's address: the socket's peer, or — when the peer is one of `trustProxy` (a balancer,
 * nginx) — the last address in `X-Forwarded-For` that is not itself a trusted proxy.
 */
export function clientAddress(request: IncomingMessage, trustProxy: ReadonlySet<string>): string {
  const peer = plain(request.socket.remoteAddress ?? 'unknown')
  if (trustProxy.size === 0 || !trustProxy.has(peer)) return peer
  const header = request.headers['x-forwarded-for']
  const hops = (Array.isArray(header) ? header.join(',') : (header ?? '')).split(',').map((h) => plain(h.trim()))
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = hops[i]!
    if (isIP(hop) === 0) return peer // a malformed chain: count it against the proxy, not a made-up client
    if (!trustProxy.has(hop)) return hop
  }
  return peer
}

export function trustedProxies(list: readonly string[] | undefined): ReadonlySet<string> {
  const set = new Set<string>()
  for (const a of list ?? []) {
    if (typeof a !== 'string' || isIP(plain(a)) === 0) {
      throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', ['trustProxy', `${JSON.stringify(a)} is not an IP address`], { details: { option: 'trustProxy' } })
    }
    set.add(plain(a))
  }
  return set
}

/** IPv4 peers of a dual-stack socket show as `::ffff:a.b.c.d`; count them as `a.b.c.d`. */
function plain(address: string): string {
  return address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address.toLowerCase()
}

/** Open connections per client address and per principal name on this instance. */
export class ConnectionCounts {
  readonly #byAddress = new Map<string, number>()
  readonly #byPrincipal = new Map<string, number>()

  /** Takes a slot for `address` unless it already holds `max`; the caller gives it back with `releaseAddress`. */
  takeAddress(address: string, max: number): boolean {
    const n = this.#byAddress.get(address) ?? 0
    if (n >= max) return false
    this.#byAddress.set(address, n + 1)
    return true
  }

  releaseAddress(address: string): void {
    const n = (this.#byAddress.get(address) ?? 0) - 1
    if (n > 0) this.#byAddress.set(address, n)
    else this.#byAddress.delete(address)
  }

  principal(name: string): number {
    return this.#byPrincipal.get(name) ?? 0
  }

  addPrincipal(name: string): void {
    this.#byPrincipal.set(name, this.principal(name) + 1)
  }

  removePrincipal(name: string): void {
    const n = this.principal(name) - 1
    if (n > 0) this.#byPrincipal.set(name, n)
    else this.#byPrincipal.delete(name)
  }

  /** Addresses and principals currently counted (for tests and the dashboard's figures). */
  get sizes(): { addresses: number; principals: number } {
    return { addresses: this.#byAddress.size, principals: this.#byPrincipal.size }
  }
}

const REASONS: Record<number, string> = { 401: 'Unauthorized', 403: 'Forbidden', 429: 'Too Many Requests', 503: 'Service Unavailable' }

/**
 * Answers an upgrade request in plain HTTP and closes the socket as soon as the answer is written
 * (the HTTP server keeps upgrade sockets half-open otherwise, and a client that never closes its
 * side would hold them). The body is `<code>: <message>`.
 */
export function refuseUpgrade(socket: Duplex, status: number, code: ErrorCode, args: readonly unknown[], headers: Record<string, string> = {}): void {
  const body = `${code}: ${new ChorusError(code, args).message}\n`
  let head = `HTTP/1.1 ${status} ${REASONS[status] ?? 'Refused'}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n`
  for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`
  socket.on('error', () => socket.destroy())
  if (socket.destroyed || !socket.writable) {
    socket.destroy()
    return
  }
  socket.resume() // read and drop whatever the client still sends, so the close is a FIN, not a reset
  socket.end(head + '\r\n' + body, () => socket.destroy())
  // A peer that reads nothing would keep the write (and the socket) pending; a second is plenty.
  const t = setTimeout(() => socket.destroy(), 1000)
  t.unref()
  socket.once('close', () => clearTimeout(t))
}
