/**
 * The built-in balancer: an HTTP/1.1 reverse proxy whose upstreams are the live `up` members.
 * Upstream requests go through undici pools (bounded keep-alive); WebSocket upgrades are tunnelled
 * over raw sockets, which no maintained proxy library does together with membership-driven routing
 * and sticky pins — hence this file. Requests are never sent to a dead or draining member; an
 * idempotent request (or one that failed before a byte reached the upstream) is retried once on
 * another member; members that refuse connections are ejected. Every member's readiness path is
 * probed each second: one that answers 5xx (isolated from the database, draining, starting) gets
 * no new requests until it answers 2xx again; a member without the route (4xx) counts as ready.
 * Request smuggling shapes (Content-Length with Transfer-Encoding, conflicting lengths) and
 * oversized headers are refused by the strict HTTP parser before anything is forwarded.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { connect as netConnect, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { type Dispatcher, Pool, request as undiciRequest } from 'undici'
import { toError } from '../errors.js'
import { readAffinity, signAffinity } from './affinity.js'
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
  /** Time allowed for an upstream to answer headers. Default 60 s. */
  upstreamTimeoutMs?: number
  /** Grace before tunnels to a draining member are cut (the instance itself closes them first with 1012). Default 10 s. */
  drainGraceMs?: number
}

interface Upstream {
  readonly member: UpstreamMember
  readonly pool: Pool
  readonly host: string
  readonly port: number
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
/** Request bodies up to this size are kept in memory so the request can be retried elsewhere. */
const RETRY_BODY_LIMIT = 64 * 1024
const NOT_SENT = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'ENOTFOUND', 'EHOSTUNREACH'])

export interface BalancerStats {
  requests: number
  retries: number
  failures: number
  upgrades: number
  perUpstream: Record<string, number>
}

export class Balancer {
  readonly #watcher: MemberWatcher
  readonly #log: Logger
  readonly #opts: Required<Omit<BalancerOptions, 'host'>> & { host: string }
  readonly #upstreams = new Map<string, Upstream>()
  #server: Server | null = null
  #rr = 0
  #probeTimer: NodeJS.Timeout | null = null
  readonly stats: BalancerStats = { requests: 0, retries: 0, failures: 0, upgrades: 0, perUpstream: {} }

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
      drainGraceMs: opts.drainGraceMs ?? 10_000,
    }
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
      requestTimeout: 0,
      headersTimeout: 20_000,
      keepAliveTimeout: 5000,
    })
    server.on('request', (req, res) => void this.#handle(req, res))
    server.on('upgrade', (req, socket, head) => this.#upgrade(req, socket, head))
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
      if (!socket.writable) return socket.destroy()
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request'
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`)
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
          bodyTimeout: 0,
          connectTimeout: 2000,
        }),
        host: url.hostname,
        port: Number(url.port || (url.protocol === 'https:' ? 443 : 80)),
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
        this.#log.warn({ member: id }, 'upstream removed')
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

  #forwardHeaders(req: IncomingMessage): Record<string, string | string[]> {
    const out: Record<string, string | string[]> = {}
    // Headers named in Connection are hop-by-hop too; the usual `keep-alive` names only one already in HOP.
    const connection = req.headers.connection
    const connectionTokens = connection === undefined || connection === 'keep-alive' ? null : new Set(connection.toLowerCase().split(',').map((t) => t.trim()))
    for (const name in req.headers) {
      const value = req.headers[name]
      if (value === undefined || HOP.has(name) || connectionTokens?.has(name)) continue
      out[name] = value
    }
    const remote = req.socket.remoteAddress ?? ''
    const prior = req.headers['x-forwarded-for']
    out['x-forwarded-for'] = prior ? `${Array.isArray(prior) ? prior.join(', ') : prior}, ${remote}` : remote
    out['x-forwarded-proto'] = (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http'
    if (req.headers.host) out['x-forwarded-host'] = req.headers.host
    return out
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.stats.requests++
    const method = req.method ?? 'GET'
    const headers = this.#forwardHeaders(req)
    const length = Number(req.headers['content-length'] ?? 0)
    const hasBody = req.headers['transfer-encoding'] !== undefined || length > 0
    let body: Buffer | IncomingMessage | null = null
    if (hasBody) {
      if (req.headers['transfer-encoding'] === undefined && length <= RETRY_BODY_LIMIT) {
        const chunks: Buffer[] = []
        for await (const c of req) chunks.push(c as Buffer)
        body = Buffer.concat(chunks)
      } else {
        body = req
      }
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
      try {
        await this.#forward(up, req, res, method, headers, body, pin, state)
        return
      } catch (err) {
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
      }
    }
    this.stats.failures++
    if (!res.headersSent) res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '1' }).end('no instance available')
  }

  /**
   * Sends one request to `up` and streams its answer into `res` as it arrives (pausing the upstream
   * while the client is slow). Rejects with the error; `state.started` tells whether the upstream had
   * begun answering, after which the request cannot be retried. A client that goes away aborts the
   * upstream request. The handler is undici's dispatch interface: no stream objects per request.
   */
  #forward(
    up: Upstream,
    req: IncomingMessage,
    res: ServerResponse,
    method: string,
    headers: Record<string, string | string[]>,
    body: Buffer | IncomingMessage | null,
    pin: boolean,
    state: { started: boolean },
  ): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let controller: Dispatcher.DispatchController | null = null
      let settled = false
      let gone = false
      const settle = (err?: Error) => {
        if (settled) return
        settled = true
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
      up.pool.dispatch(
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
              res.once('drain', () => c.resume())
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

  #upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    this.stats.upgrades++
    const tried = new Set<string>()
    const attempt = () => {
      const choice = this.#pick(req, tried)
      if (!choice) {
        socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
        return
      }
      const { up } = choice
      tried.add(up.member.id)
      const upstream: Socket = netConnect(up.port, up.host)
      let connected = false
      upstream.once('connect', () => {
        connected = true
        const headers = this.#forwardHeaders(req)
        let head0 = `${req.method} ${req.url} HTTP/1.1\r\n`
        for (const [k, v] of Object.entries(headers)) for (const val of Array.isArray(v) ? v : [v]) head0 += `${k}: ${val}\r\n`
        head0 += `connection: Upgrade\r\nupgrade: ${req.headers.upgrade ?? 'websocket'}\r\n\r\n`
        upstream.write(head0)
        if (head.length) upstream.write(head)
        socket.pipe(upstream).pipe(socket)
        up.tunnels.add(socket)
        const done = () => {
          up.tunnels.delete(socket)
          socket.destroy()
          upstream.destroy()
        }
        socket.once('close', done)
        upstream.once('close', done)
        socket.on('error', done)
        upstream.on('error', done)
      })
      upstream.once('error', (err: NodeJS.ErrnoException) => {
        if (connected) return
        this.#eject(up, err.code ?? 'error')
        if (tried.size < 2) attempt()
        else socket.end('HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
      })
    }
    socket.on('error', () => undefined)
    attempt()
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
