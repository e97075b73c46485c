/**
 * The built-in balancer: an HTTP/1.1 reverse proxy whose upstreams are the routable `up` members
 * (upstreams.ts: selection, stickiness, ejection, readiness). Requests are relayed by the proxy core
 * (proxy.ts); WebSocket upgrades are tunnelled over raw sockets (tunnel.ts) once the instance
 * answers 101. Requests are never sent to a dead or draining member; every member's readiness path
 * is probed each second (readiness.ts): one that answers 5xx gets no new requests until it answers
 * 2xx again; a member without the route (4xx) counts as ready. Request smuggling shapes
 * (Content-Length with Transfer-Encoding, conflicting lengths) and oversized headers are refused by
 * the strict HTTP parser before anything is forwarded.
 *
 * Against clients that hold resources: each client address has at most `maxRequestsPerClient`
 * requests and handshakes in flight (more: 429). Timeouts bound every wait on a client — its
 * headers, its whole request, each pause in its body, an idle keep-alive connection, a response it
 * does not read — and on an instance: connecting, the answer's head, each pause in its body.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { TrustedProxies } from './forwarded.js'
import { resolveBalancerOptions, type BalancerOptions, type ResolvedBalancerOptions } from './options.js'
import { ProxyCore, type BalancerStats } from './proxy.js'
import { answerAndClose, handshake } from './tunnel.js'
import { CONNECT_TIMEOUT_MS, Upstreams } from './upstreams.js'
import type { MemberWatcher } from './watcher.js'

export type { BalancerOptions, Strategy } from './options.js'
export type { BalancerStats } from './proxy.js'

/** Where the balancer learns its upstreams: the MemberWatcher (any source of the same shape). */
export type MemberSource = Pick<MemberWatcher, 'members' | 'onChange'>

export class Balancer {
  readonly #watcher: MemberSource
  readonly #log: Logger
  readonly #opts: ResolvedBalancerOptions
  readonly #trust: TrustedProxies
  readonly #upstreams: Upstreams
  readonly #proxy: ProxyCore
  /** Requests and handshakes in flight per client address (absent: none). */
  readonly #inFlight = new Map<string, number>()
  #server: Server | null = null
  #offWatcher: (() => void) | null = null
  readonly stats: BalancerStats = { requests: 0, retries: 0, failures: 0, upgrades: 0, limited: 0, stalled: 0, perUpstream: {} }

  /** Refuses bad options with `CHORUS_ERR_OPTIONS_INVALID` naming the option. */
  constructor(watcher: MemberSource, log: Logger, opts: BalancerOptions) {
    this.#watcher = watcher
    this.#log = log.child({ subsystem: 'balancer' })
    this.#opts = resolveBalancerOptions(opts)
    this.#trust = new TrustedProxies(this.#opts.trustProxy)
    this.#upstreams = new Upstreams(this.#opts, this.#log)
    this.#proxy = new ProxyCore(this.#opts, this.#upstreams, this.stats)
  }

  get port(): number {
    const addr = this.#server?.address()
    return addr && typeof addr === 'object' ? addr.port : this.#opts.port
  }

  /** Members currently receiving new requests. */
  get eligible(): string[] {
    return this.#upstreams.eligible().map((u) => u.member.id)
  }

  async start(): Promise<void> {
    this.#upstreams.sync(this.#watcher.members)
    this.#offWatcher = this.#watcher.onChange((members) => this.#upstreams.sync(members))
    const server = createServer({
      maxHeaderSize: this.#opts.maxHeaderBytes,
      insecureHTTPParser: false,
      requestTimeout: this.#opts.requestTimeoutMs,
      headersTimeout: Math.min(this.#opts.headersTimeoutMs, this.#opts.requestTimeoutMs),
      keepAliveTimeout: this.#opts.keepAliveTimeoutMs,
      // How often the header and request timeouts are checked (Node's default: every 30 s).
      connectionsCheckingInterval: 2000,
    })
    server.on('request', (req, res) => void this.#handle(req, res))
    server.on('upgrade', (req, socket, head) => void this.#upgrade(req, socket, head))
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
      // Once an answer has begun on this connection, nothing more can be said on it.
      const answering = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true
      if (!socket.writable || answering) return socket.destroy()
      const status =
        err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request'
      answerAndClose(socket, status, { discard: false })
    })
    this.#server = server
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.#opts.port, this.#opts.host, () => resolve())
    })
    this.#upstreams.startProbing()
  }

  /** Counts a request or handshake from `address` in; false (nothing counted) when the address is at its limit. */
  #admit(address: string): boolean {
    const n = this.#inFlight.get(address) ?? 0
    if (this.#opts.maxRequestsPerClient > 0 && n >= this.#opts.maxRequestsPerClient) return false
    this.#inFlight.set(address, n + 1)
    return true
  }

  #release(address: string): void {
    const n = this.#inFlight.get(address) ?? 0
    if (n <= 1) this.#inFlight.delete(address)
    else this.#inFlight.set(address, n - 1)
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.stats.requests++
    const client = this.#trust.clientOf(req)
    if (!this.#admit(client.address)) {
      this.stats.limited++
      res.writeHead(429, { 'content-type': 'text/plain', 'retry-after': '1', connection: 'close' }).end('too many requests in flight from this address')
      return
    }
    try {
      await this.#proxy.proxy(req, res, client)
    } finally {
      this.#release(client.address)
    }
  }

  /**
   * An upgrade (WebSocket) request: handed to one instance, tunnelled only once it answers 101 (see
   * tunnel.ts); an instance that cannot be reached is ejected and one other is tried.
   */
  async #upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    this.stats.upgrades++
    socket.on('error', () => undefined)
    // An upgrade carries no body; one that says it does is not relayed.
    if (req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0) return answerAndClose(socket, '400 Bad Request')
    const client = this.#trust.clientOf(req)
    if (!this.#admit(client.address)) {
      this.stats.limited++
      return answerAndClose(socket, '429 Too Many Requests')
    }
    try {
      const tried = new Set<string>()
      for (let attempt = 0; attempt < 2; attempt++) {
        const choice = this.#upstreams.pick(req, tried)
        if (!choice) break
        const { up } = choice
        tried.add(up.member.id)
        const outcome = await handshake(socket, req, head, up, this.#proxy.forwardHeaders(req, client), {
          connectTimeoutMs: CONNECT_TIMEOUT_MS,
          answerTimeoutMs: this.#opts.upstreamTimeoutMs,
          maxHeaderBytes: this.#opts.maxHeaderBytes,
        })
        if (outcome.kind === 'unreachable') {
          this.#upstreams.eject(up, outcome.code)
          continue
        }
        if (outcome.kind === 'tunnel') {
          up.tunnels.add(socket)
          socket.once('close', () => up.tunnels.delete(socket))
          // The member may have started draining, or gone, during the handshake.
          if (!this.#upstreams.has(up.member.id)) socket.destroy()
          else if (up.member.status === 'draining') this.#upstreams.scheduleCut(up)
        } else if (outcome.kind === 'failed') {
          this.stats.failures++
        }
        return
      }
      this.stats.failures++
      answerAndClose(socket, tried.size > 0 ? '502 Bad Gateway' : '503 Service Unavailable')
    } finally {
      this.#release(client.address)
    }
  }

  async close(): Promise<void> {
    this.#offWatcher?.()
    this.#upstreams.close()
    if (this.#server) {
      const server = this.#server
      await new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections?.()
      })
    }
  }
}
