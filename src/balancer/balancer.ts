/**
 * The built-in balancer: an HTTP/1.1 reverse proxy whose upstreams are the live `up` members.
 * Upstream requests go through undici pools (bounded keep-alive); WebSocket upgrades are tunnelled
 * over raw sockets (tunnel.ts), which no maintained proxy library does together with
 * membership-driven routing and sticky pins — hence this file. Requests are never sent to a dead or
 * draining member; an idempotent request (or one that failed before a byte reached the upstream) is
 * retried once on another member; members that refuse connections are ejected. Every member's
 * readiness path is probed each second: one that answers 5xx (isolated from the database, draining,
 * starting) gets no new requests until it answers 2xx again; a member without the route (4xx)
 * counts as ready. Request smuggling shapes (Content-Length with Transfer-Encoding, conflicting
 * lengths) and oversized headers are refused by the strict HTTP parser before anything is forwarded.
 *
 * Against clients that hold resources: a request body is read into memory (up to
 * `bodyBufferBytes`, 64 KiB) before an instance is chosen, so a slow or stalled body never holds a
 * pooled upstream connection; a larger body streams over an upstream connection of its own, opened
 * for that request and closed after it, so the bytes an instance left unread after an early answer
 * (a 413 to an `Expect: 100-continue` upload) can never reach another request. Each client address
 * has at most `maxRequestsPerClient` requests and handshakes in flight (more: 429). Timeouts bound
 * every wait on a client — its headers, its whole request, each pause in its body, an idle
 * keep-alive connection, a response it does not read — and on an instance: connecting, the answer's
 * head, each pause in its body. Proxy headers are the balancer's own (forwarded.ts).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { type Duplex, Readable } from 'node:stream'
import type { Logger } from 'pino'
import { Client as UndiciClient, type Dispatcher, Pool, request as undiciRequest } from 'undici'
import { toError } from '../errors.js'
import { readAffinity, signAffinity } from './affinity.js'
import { BodyStalledError, readBody, restOfBody } from './body.js'
import { type Client, PROXY_HEADERS, setProxyHeaders, TrustedProxies } from './forwarded.js'
import { answerAndClose, handshake } from './tunnel.js'
import type { MemberWatcher, UpstreamMember } from './watcher.js'

export type Strategy = 'round-robin' | 'least-connections'

export interface BalancerOptions {
  port: number
  host?: string
  strategy?: Strategy
  /** Pin each client to one instance with a signed cookie. Default false. */
  sticky?: boolean
  stickyCookie?: string
  /** Signs the affinity cookie. */
  secret: string
  /** Readiness path each instance answers (see `cluster.health`), probed every second. Default `/health/ready`. */
  healthPath?: string
  /** How long a member that refused a connection is left out before it is probed again. Default 5 s. */
  ejectMs?: number
  /** Keep-alive connections per upstream. Default 64. */
  connectionsPerUpstream?: number
  /** Largest request head accepted. Default 16 KiB (larger: 431). */
  maxHeaderBytes?: number
  /** Time allowed for an upstream to answer headers (and a WebSocket handshake). Default 60 s. */
  upstreamTimeoutMs?: number
  /** Longest pause between two pieces of an upstream's answer. Default 60 s. */
  upstreamBodyTimeoutMs?: number
  /** Time a client has to send a request's headers. Default 20 s (then 408). */
  headersTimeoutMs?: number
  /** Time a client has to send a whole request, headers and body. Default 300 s (then 408). */
  requestTimeoutMs?: number
  /** Longest pause in a request body before the request is refused. Default 30 s (then 408). */
  bodyTimeoutMs?: number
  /** How long an idle client connection is kept open between requests. Default 5 s. */
  keepAliveTimeoutMs?: number
  /** Longest wait for a client that does not read its answer before the connection is cut. Default 60 s. */
  sendTimeoutMs?: number
  /** Request bodies up to this size are read whole before an instance is chosen (and can be retried elsewhere); larger ones stream over a connection of their own. Default 64 KiB. */
  bodyBufferBytes?: number
  /** Requests and WebSocket handshakes one client address may have in flight at once; 0 for no limit. Default 256 (more: 429). */
  maxRequestsPerClient?: number
  /**
   * Addresses or CIDRs of proxies in front of the balancer whose `X-Forwarded-*`, `Forwarded` and
   * `X-Real-IP` are believed (kept and extended). Default none: those headers are always replaced.
   */
  trustProxy?: readonly string[]
  /** Grace before tunnels to a draining member are cut (the instance itself closes them first with 1012). Default 10 s. */
  drainGraceMs?: number
}

interface Upstream {
  readonly member: UpstreamMember
  readonly pool: Pool
  readonly origin: string
  readonly host: string
  readonly port: number
  readonly secure: boolean
  active: number
  ejectedUntil: number
  /** The last readiness probe said so (or two probes in a row failed to answer). */
  ready: boolean
  probeFailures: number
  probing: boolean
  tunnels: Set<Duplex>
  drainTimer: NodeJS.Timeout | null
}

const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect', 'http2-settings'])
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE'])
const NOT_SENT = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'ENOTFOUND', 'EHOSTUNREACH'])
const CONNECT_TIMEOUT_MS = 2000

export interface BalancerStats {
  requests: number
  retries: number
  failures: number
  upgrades: number
  /** Requests and handshakes refused with 429: their address had too many in flight. */
  limited: number
  /** Requests refused with 408: the client stalled in its body. */
  stalled: number
  perUpstream: Record<string, number>
}

export class Balancer {
  readonly #watcher: MemberWatcher
  readonly #log: Logger
  readonly #opts: Required<Omit<BalancerOptions, 'host' | 'trustProxy'>> & { host: string }
  readonly #trust: TrustedProxies
  readonly #upstreams = new Map<string, Upstream>()
  /** Requests and handshakes in flight per client address (absent: none). */
  readonly #inFlight = new Map<string, number>()
  #server: Server | null = null
  #rr = 0
  #probeTimer: NodeJS.Timeout | null = null
  readonly stats: BalancerStats = { requests: 0, retries: 0, failures: 0, upgrades: 0, limited: 0, stalled: 0, perUpstream: {} }

  constructor(watcher: MemberWatcher, log: Logger, opts: BalancerOptions) {
    this.#watcher = watcher
    this.#log = log.child({ subsystem: 'balancer' })
    this.#opts = {
      host: opts.host ?? '127.0.0.1',
      port: opts.port,
      strategy: opts.strategy ?? 'round-robin',
      sticky: opts.sticky ?? false,
      stickyCookie: opts.stickyCookie ?? 'chorus_affinity',
      secret: opts.secret,
      healthPath: opts.healthPath ?? '/health/ready',
      ejectMs: opts.ejectMs ?? 5000,
      connectionsPerUpstream: opts.connectionsPerUpstream ?? 64,
      maxHeaderBytes: opts.maxHeaderBytes ?? 16 * 1024,
      upstreamTimeoutMs: opts.upstreamTimeoutMs ?? 60_000,
      upstreamBodyTimeoutMs: opts.upstreamBodyTimeoutMs ?? 60_000,
      headersTimeoutMs: opts.headersTimeoutMs ?? 20_000,
      requestTimeoutMs: opts.requestTimeoutMs ?? 300_000,
      bodyTimeoutMs: opts.bodyTimeoutMs ?? 30_000,
      keepAliveTimeoutMs: opts.keepAliveTimeoutMs ?? 5000,
      sendTimeoutMs: opts.sendTimeoutMs ?? 60_000,
      bodyBufferBytes: opts.bodyBufferBytes ?? 64 * 1024,
      maxRequestsPerClient: opts.maxRequestsPerClient ?? 256,
      drainGraceMs: opts.drainGraceMs ?? 10_000,
    }
    this.#trust = new TrustedProxies(opts.trustProxy)
  }

  get port(): number {
    const addr = this.#server?.address()
    return addr && typeof addr === 'object' ? addr.port : this.#opts.port
  }

  /** Members currently receiving new requests. */
  get eligible(): string[] {
    return this.#eligible().map((u) => u.member.id)
  }

  async start(): Promise<void> {
    this.#sync(this.#watcher.members)
    this.#watcher.onChange((members) => this.#sync(members))
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
    this.#probeTimer = setInterval(() => void this.#probe(), 1000)
    this.#probeTimer.unref()
  }

  #sync(members: readonly UpstreamMember[]): void {
    const seen = new Set<string>()
    for (const m of members) {
      seen.add(m.id)
      const current = this.#upstreams.get(m.id)
      if (current && current.member.url === m.url && current.member.epoch === m.epoch) {
        if (current.member.status !== m.status) {
          ;(current as { member: UpstreamMember }).member = m
          if (m.status === 'draining') this.#scheduleCut(current)
        }
        continue
      }
      if (current) this.#retire(current)
      let url: URL
      try {
        url = new URL(m.url)
      } catch {
        continue
      }
      const up: Upstream = {
        member: m,
        pool: new Pool(url.origin, {
          connections: this.#opts.connectionsPerUpstream,
          pipelining: 1,
          keepAliveTimeout: 30_000,
          headersTimeout: this.#opts.upstreamTimeoutMs,
          bodyTimeout: this.#opts.upstreamBodyTimeoutMs,
          connectTimeout: CONNECT_TIMEOUT_MS,
        }),
        origin: url.origin,
        host: url.hostname,
        port: Number(url.port || (url.protocol === 'https:' ? 443 : 80)),
        secure: url.protocol === 'https:',
        active: 0,
        ejectedUntil: 0,
        ready: true,
        probeFailures: 0,
        probing: false,
        tunnels: new Set(),
        drainTimer: null,
      }
      this.#upstreams.set(m.id, up)
      if (m.status === 'draining') this.#scheduleCut(up)
      this.#log.info({ member: m.id, url: m.url, status: m.status }, 'upstream added')
    }
    for (const [id, up] of this.#upstreams) {
      if (!seen.has(id)) {
        this.#log.info({ member: id }, 'upstream removed')
        this.#retire(up)
      }
    }
  }

  #retire(up: Upstream): void {
    this.#upstreams.delete(up.member.id)
    if (up.drainTimer) clearTimeout(up.drainTimer)
    for (const t of up.tunnels) t.destroy()
    void up.pool.close().catch(() => undefined)
  }

  #scheduleCut(up: Upstream): void {
    if (up.drainTimer || up.tunnels.size === 0) return
    up.drainTimer = setTimeout(() => {
      for (const t of up.tunnels) t.destroy()
    }, this.#opts.drainGraceMs)
    up.drainTimer.unref()
  }

  #eligible(exclude?: ReadonlySet<string>): Upstream[] {
    const now = Date.now()
    return [...this.#upstreams.values()].filter((u) => u.member.status === 'up' && u.ready && u.ejectedUntil <= now && !exclude?.has(u.member.id))
  }

  #pick(req: IncomingMessage, exclude: ReadonlySet<string>): { up: Upstream; pin: boolean } | null {
    const candidates = this.#eligible(exclude)
    if (candidates.length === 0) return null
    if (this.#opts.sticky) {
      const pinned = readAffinity(this.#opts.secret, req.headers.cookie, this.#opts.stickyCookie)
      const up = pinned ? candidates.find((c) => c.member.id === pinned) : undefined
      if (up) return { up, pin: false }
    }
    let up: Upstream
    if (this.#opts.strategy === 'least-connections') {
      up = candidates.reduce((best, c) => (c.active < best.active ? c : best))
      // Spread ties instead of always favouring the first.
      const ties = candidates.filter((c) => c.active === up.active)
      up = ties[this.#rr++ % ties.length]!
    } else {
      up = candidates[this.#rr++ % candidates.length]!
    }
    return { up, pin: this.#opts.sticky }
  }

  #forwardHeaders(req: IncomingMessage, client: Client): Record<string, string | string[]> {
    const out: Record<string, string | string[]> = {}
    // Headers named in Connection are hop-by-hop too; the usual `keep-alive` names only one already in HOP.
    const connection = req.headers.connection
    const connectionTokens = connection === undefined || connection === 'keep-alive' ? null : new Set(connection.toLowerCase().split(',').map((t) => t.trim()))
    for (const name in req.headers) {
      const value = req.headers[name]
      if (value === undefined || HOP.has(name) || PROXY_HEADERS.has(name) || connectionTokens?.has(name)) continue
      out[name] = value
    }
    setProxyHeaders(out, req, client, (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http')
    return out
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
      await this.#proxy(req, res, client)
    } finally {
      this.#release(client.address)
    }
  }

  async #proxy(req: IncomingMessage, res: ServerResponse, client: Client): Promise<void> {
    const method = req.method ?? 'GET'
    const headers = this.#forwardHeaders(req, client)
    const hasBody = req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0
    // The body is read (up to the buffer limit) before an instance is chosen: a slow client holds
    // nothing upstream while it sends.
    let body: Buffer | Readable | null = null
    if (hasBody) {
      const start = await readBody(req, this.#opts.bodyBufferBytes, this.#opts.bodyTimeoutMs)
      if ('failed' in start) {
        if (start.failed === 'stalled') this.#stalled(res)
        return
      }
      body = start.whole ? Buffer.concat(start.chunks) : Readable.from(restOfBody(start.chunks, req, this.#opts.bodyTimeoutMs), { objectMode: false })
    }
    const replayable = body === null || Buffer.isBuffer(body)
    const tried = new Set<string>()
    for (let attempt = 0; attempt < 2; attempt++) {
      const choice = this.#pick(req, tried)
      if (!choice) break
      const { up, pin } = choice
      tried.add(up.member.id)
      up.active++
      const state = { started: false }
      // A streamed body gets a connection of its own, closed after this request: whatever the
      // instance leaves unread of it stays on that connection.
      const own = replayable ? null : this.#ownConnection(up)
      try {
        await this.#forward(own ?? up.pool, up, req, res, method, headers, body, pin, state)
        return
      } catch (err) {
        if (err instanceof BodyStalledError) {
          if (!res.headersSent) this.#stalled(res)
          else res.destroy()
          return
        }
        const code = (err as NodeJS.ErrnoException).code ?? ''
        const causeCode = ((err as { cause?: NodeJS.ErrnoException }).cause?.code) ?? ''
        const notSent = NOT_SENT.has(code) || NOT_SENT.has(causeCode)
        if (notSent || code === 'UND_ERR_SOCKET' || code === 'ECONNRESET') this.#eject(up, code || causeCode)
        if (res.destroyed && !state.started) return // the client left before an answer began: nothing to retry or answer
        const retry = !state.started && !res.headersSent && attempt === 0 && replayable && (IDEMPOTENT.has(method) || notSent)
        if (retry) {
          this.stats.retries++
          continue
        }
        this.stats.failures++
        if (!res.headersSent) {
          res.writeHead(502, { 'content-type': 'text/plain', connection: 'close' }).end('bad gateway: the instance failed to answer')
        } else {
          res.destroy(toError(err))
        }
        return
      } finally {
        up.active--
        if (own) void own.destroy().catch(() => undefined)
      }
    }
    this.stats.failures++
    if (!res.headersSent) res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '1', ...(req.complete ? {} : { connection: 'close' }) }).end('no instance available')
  }

  /** A connection to `up` outside its pool, for one request whose body streams. */
  #ownConnection(up: Upstream): UndiciClient {
    return new UndiciClient(up.origin, {
      pipelining: 1,
      headersTimeout: this.#opts.upstreamTimeoutMs,
      bodyTimeout: this.#opts.upstreamBodyTimeoutMs,
      connectTimeout: CONNECT_TIMEOUT_MS,
    })
  }

  #stalled(res: ServerResponse): void {
    this.stats.stalled++
    if (!res.destroyed) res.writeHead(408, { 'content-type': 'text/plain', connection: 'close' }).end('request timeout: the body stalled')
  }

  /**
   * Sends one request to `up` over `via` (its pool, or a connection of the request's own) and
   * streams its answer into `res` as it arrives (pausing the upstream while the client is slow, for
   * at most the send timeout). Rejects with the error; `state.started` tells whether the upstream
   * had begun answering, after which the request cannot be retried. A client that goes away aborts
   * the upstream request. The handler is undici's dispatch interface: no stream objects per request.
   */
  #forward(
    via: Dispatcher,
    up: Upstream,
    req: IncomingMessage,
    res: ServerResponse,
    method: string,
    headers: Record<string, string | string[]>,
    body: Buffer | Readable | null,
    pin: boolean,
    state: { started: boolean },
  ): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let controller: Dispatcher.DispatchController | null = null
      let settled = false
      let gone = false
      let sendTimer: NodeJS.Timeout | null = null
      const settle = (err?: Error) => {
        if (settled) return
        settled = true
        if (sendTimer) clearTimeout(sendTimer)
        res.off('close', onClientGone)
        if (err) reject(err)
        else resolve()
      }
      const clientGone = () => new Error('the client closed the connection')
      // The client may leave while the request still waits for a pooled connection: it is then
      // aborted as soon as it starts, so nothing waits on a client that is not there.
      const onClientGone = () => {
        gone = true
        controller?.abort(clientGone())
      }
      res.once('close', onClientGone)
      via.dispatch(
        { path: req.url ?? '/', method: method as Dispatcher.HttpMethod, headers, body },
        {
          onRequestStart: (c) => {
            controller = c
            if (gone) c.abort(clientGone())
          },
          onResponseStart: (c, statusCode, upHeaders) => {
            if (statusCode < 200) return // informational answers are not forwarded
            state.started = true
            try {
              const h: Record<string, string | string[]> = {}
              for (const k in upHeaders) {
                const v = upHeaders[k]
                if (v !== undefined && !HOP.has(k)) h[k] = v
              }
              if (pin) {
                const cookie = `${this.#opts.stickyCookie}=${signAffinity(this.#opts.secret, up.member.id)}; Path=/; HttpOnly; SameSite=Lax`
                const prior = h['set-cookie']
                h['set-cookie'] = prior ? [...(Array.isArray(prior) ? prior : [prior]), cookie] : cookie
              }
              // An answer before the whole body arrived (an early 413): the rest of the body is not
              // read, so the client's connection cannot carry another request.
              if (!req.complete) h.connection = 'close'
              res.writeHead(statusCode, h)
              this.stats.perUpstream[up.member.id] = (this.stats.perUpstream[up.member.id] ?? 0) + 1
            } catch (err) {
              c.abort(toError(err))
            }
          },
          onResponseData: (c, chunk) => {
            if (res.destroyed) c.abort(clientGone())
            else if (!res.write(chunk)) {
              c.pause()
              // A client that does not read its answer holds the upstream connection: bounded.
              sendTimer = setTimeout(() => res.destroy(), this.#opts.sendTimeoutMs)
              res.once('drain', () => {
                if (sendTimer) clearTimeout(sendTimer)
                sendTimer = null
                c.resume()
              })
            }
          },
          onResponseEnd: () => {
            res.end()
            settle()
          },
          onResponseError: (_c, err) => settle(err),
        },
      )
    })
  }

  #eject(up: Upstream, why: string): void {
    if (up.ejectedUntil > Date.now()) return
    up.ejectedUntil = Date.now() + this.#opts.ejectMs
    this.#log.warn({ member: up.member.id, why }, 'upstream ejected')
  }

  async #probe(): Promise<void> {
    const now = Date.now()
    await Promise.all(
      [...this.#upstreams.values()].map(async (up) => {
        if (up.probing || up.ejectedUntil > now) return
        up.probing = true
        try {
          const r = await undiciRequest(`${new URL(up.member.url).origin}${this.#opts.healthPath}`, { method: 'GET', headersTimeout: 2000, bodyTimeout: 2000 })
          await r.body.dump()
          up.probeFailures = 0
          this.#setReady(up, r.statusCode < 500, `readiness answered ${r.statusCode}`)
          if (up.ejectedUntil !== 0) {
            up.ejectedUntil = 0
            this.#log.info({ member: up.member.id }, 'upstream healthy again')
          }
        } catch (err) {
          if (up.ejectedUntil !== 0) up.ejectedUntil = Date.now() + this.#opts.ejectMs
          // One lost probe on a busy instance is not a verdict; two in a row are.
          else if (++up.probeFailures >= 2) this.#setReady(up, false, `readiness probe failed: ${toError(err).message}`)
        } finally {
          up.probing = false
        }
      }),
    )
  }

  #setReady(up: Upstream, ready: boolean, why: string): void {
    if (up.ready === ready) return
    up.ready = ready
    if (ready) this.#log.info({ member: up.member.id }, 'upstream ready again')
    else this.#log.warn({ member: up.member.id, why }, 'upstream not ready: no new requests')
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
        const choice = this.#pick(req, tried)
        if (!choice) break
        const { up } = choice
        tried.add(up.member.id)
        const outcome = await handshake(socket, req, head, up, this.#forwardHeaders(req, client), {
          connectTimeoutMs: CONNECT_TIMEOUT_MS,
          answerTimeoutMs: this.#opts.upstreamTimeoutMs,
          maxHeaderBytes: this.#opts.maxHeaderBytes,
        })
        if (outcome.kind === 'unreachable') {
          this.#eject(up, outcome.code)
          continue
        }
        if (outcome.kind === 'tunnel') {
          up.tunnels.add(socket)
          socket.once('close', () => up.tunnels.delete(socket))
          // The member may have started draining, or gone, during the handshake.
          if (!this.#upstreams.has(up.member.id)) socket.destroy()
          else if (up.member.status === 'draining') this.#scheduleCut(up)
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
    if (this.#probeTimer) clearInterval(this.#probeTimer)
    for (const up of [...this.#upstreams.values()]) this.#retire(up)
    if (this.#server) {
      const server = this.#server
      await new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections?.()
      })
    }
  }
}
