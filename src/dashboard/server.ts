/**
 * The dashboard's HTTP server: the page and its static assets, the sign-in, a JSON route behind
 * every panel, the live stream (SSE), the actions (drain, retry, API tokens), cluster metrics and
 * the Eureka API. Every route but sign-in, assets and /health needs a credential: the session cookie
 * (page, API, actions), an API token (API, actions, metrics), or HTTP Basic with the password
 * (Eureka, metrics). Actions are POST only, and a session's actions must come from this origin with
 * the session's CSRF token. Failed credentials are throttled per client address. Sign-out and
 * revocation end a credential on the server, with the streams it opened.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import { ChorusError, toError } from '../errors.js'
import type { Access } from './auth.js'
import { sameOrigin } from './auth.js'
import { accessGuard, API, EUREKA, MACHINE, PAGE, throttled, type Guard } from './guard.js'
import type { ClusterMetrics } from './cluster-metrics.js'
import { handleEureka } from './eureka/routes.js'
import type { EurekaRegistry } from './eureka/registry.js'
import { answerRead, tokenJson } from './api.js'
import { clientAddress, decodeSegment, mediaType, notAllowed, parseJson, readBody, send, sendError, sendJson } from './http.js'
import type { ConfigRouteHandler } from './config-routes.js'
import { EventStream } from './sse.js'
import type { Throttle } from './throttle.js'
import type { ClusterView, InstanceView } from './view.js'

/** What the server needs to carry out actions; the dashboard wires it to the bus and the queue. */
export interface Actions {
  drain(instance: InstanceView): Promise<void>
  retryJob(id: string): Promise<boolean>
}

export interface ServerDeps {
  readonly access: Access
  readonly throttle: Throttle
  readonly view: ClusterView
  readonly metrics: ClusterMetrics
  readonly eureka: EurekaRegistry
  readonly actions: Actions
  readonly log: Logger
  /** The Config panel's routes and the Spring Cloud Config endpoint (`configRoutes`); none when absent. */
  readonly config?: ConfigRouteHandler
  /** How long a drain action waits to see the member draining before answering 202. Default 5 s. */
  readonly drainWaitMs?: number
  /** How often open streams are checked against sign-outs and revocations made elsewhere. Default 5 s. */
  readonly revalidateMs?: number
}

interface Asset {
  readonly body: Buffer
  readonly type: string
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.svg': 'image/svg+xml',
}

const UI_DIR = new URL('./ui/', import.meta.url)

function loadAssets(): Map<string, Asset> {
  const assets = new Map<string, Asset>()
  for (const name of readdirSync(UI_DIR)) {
    const ext = name.slice(name.lastIndexOf('.'))
    const type = TYPES[ext]
    if (type) assets.set(name, { body: readFileSync(new URL(name, UI_DIR)), type })
  }
  return assets
}

export class DashboardServer {
  readonly #deps: ServerDeps
  readonly #guard: Guard
  readonly #assets = loadAssets()
  readonly #stream = new EventStream()
  readonly #server: Server
  readonly #offs: (() => void)[] = []
  readonly #revalidate: NodeJS.Timeout
  #revalidating = false

  constructor(deps: ServerDeps) {
    this.#deps = deps
    this.#guard = accessGuard(deps.access, deps.throttle)
    this.#server = createServer({ requestTimeout: 30_000, headersTimeout: 10_000, maxHeaderSize: 16 * 1024 }, (req, res) => void this.#handle(req, res))
    this.#offs.push(
      deps.view.onSnapshot((s) => this.#stream.broadcast('snapshot', s)),
      deps.view.onEvents((e) => this.#stream.broadcast('member-events', e)),
    )
    // A stream outlives the request that opened it: end it once its session or token ends, here
    // (at once, see logout and revoke) or on another dashboard of the cluster (by this check).
    this.#revalidate = setInterval(() => void this.#closeEndedStreams(), deps.revalidateMs ?? 5000)
    this.#revalidate.unref()
  }

  async #closeEndedStreams(): Promise<void> {
    if (this.#revalidating) return
    this.#revalidating = true
    try {
      for (const owner of this.#stream.owners()) {
        const valid = await this.#deps.access.stillValid(owner).catch(() => true)
        if (!valid) this.#stream.closeOwner(owner)
      }
    } finally {
      this.#revalidating = false
    }
  }

  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        this.#server.off('listening', onListening)
        reject(err.code === 'EADDRINUSE' ? new ChorusError('CHORUS_ERR_DASHBOARD_PORT_IN_USE', [port], { cause: err }) : err)
      }
      const onListening = () => {
        this.#server.off('error', onError)
        const addr = this.#server.address()
        resolve(typeof addr === 'object' && addr ? addr.port : port)
      }
      this.#server.once('error', onError)
      this.#server.once('listening', onListening)
      this.#server.listen(port, host)
    })
  }

  async close(): Promise<void> {
    clearInterval(this.#revalidate)
    for (const off of this.#offs) off()
    this.#stream.close()
    await new Promise<void>((resolve) => this.#server.close(() => resolve()))
    this.#server.closeAllConnections()
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://dashboard.invalid')
    const path = url.pathname
    const method = req.method ?? 'GET'
    const get = method === 'GET' || method === 'HEAD'
    try {
      if (path === '/health' && get) return send(res, 200, 'ok\n', 'text/plain; charset=utf-8')
      if (this.#deps.config && (await this.#deps.config(req, res))) return
      if (path.startsWith('/assets/') && get) return this.#asset(res, path.slice('/assets/'.length))
      if (path === '/login') {
        if (get) return this.#loginPage(res, 200)
        if (method === 'POST') return await this.#login(req, res)
        throw notAllowed(method, path)
      }
      if (path === '/' || path === '/index.html') {
        if (!get) throw notAllowed(method, path)
        const cred = await this.#guard.authenticate(req, PAGE)
        if (!('via' in cred)) return this.#loginPage(res, 401)
        return this.#asset(res, 'index.html')
      }
      if (path === '/logout') {
        if (method !== 'POST') throw notAllowed(method, path)
        const origin = sameOrigin(req, false)
        if (!origin.ok) throw new ChorusError('CHORUS_ERR_DASHBOARD_CROSS_SITE', [origin.why])
        req.resume()
        // The session ends on the server, not only in this browser: a copy of the cookie stops working too.
        const ended = await this.#deps.access.endSession(req)
        if (ended !== null) {
          this.#stream.closeOwner(`s:${ended}`)
          this.#deps.log.info({ client: clientAddress(req) }, 'signed out')
        }
        return send(res, 303, '', 'text/plain', { location: '/login', 'set-cookie': this.#deps.access.clearCookie() })
      }
      if (path === '/metrics') {
        if (!get) throw notAllowed(method, path)
        await this.#guard.require(req, MACHINE)
        return send(res, 200, await this.#deps.metrics.text(), this.#deps.metrics.contentType)
      }
      if (path === '/eureka' || path.startsWith('/eureka/')) {
        await this.#guard.require(req, EUREKA)
        return await handleEureka(this.#deps.eureka, req, res, url)
      }
      if (path.startsWith('/api/')) return await this.#api(req, res, path.slice('/api/'.length).split('/'), method)
      throw new ChorusError('CHORUS_ERR_DASHBOARD_NOT_FOUND', [path])
    } catch (err) {
      if (!(err instanceof ChorusError)) this.#deps.log.error({ err: toError(err), method, path }, 'request failed')
      const headers: Record<string, string> = {}
      if (err instanceof ChorusError && err.code === 'CHORUS_ERR_DASHBOARD_UNAUTHORIZED' && (path === '/eureka' || path.startsWith('/eureka/') || path === '/metrics')) {
        headers['www-authenticate'] = 'Basic realm="chorus", charset="UTF-8"'
      }
      sendError(res, err, headers)
    }
  }

  async #login(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const json = mediaType(req) === 'application/json'
    const fail = (status: number, err: ChorusError, headers: Record<string, string> = {}) =>
      json ? sendError(res, err, headers) : this.#loginPage(res, status, err.message, headers)
    const origin = sameOrigin(req, true)
    if (!origin.ok) return fail(403, new ChorusError('CHORUS_ERR_DASHBOARD_CROSS_SITE', [origin.why]))
    const client = clientAddress(req)
    const wait = this.#deps.throttle.retryAfterSec(client)
    if (wait > 0) {
      req.resume()
      return fail(429, throttled(wait), { 'retry-after': String(wait) })
    }
    const body = await readBody(req)
    let password: unknown
    if (json) password = (parseJson(body) as { password?: unknown } | null)?.password
    else if (mediaType(req) === 'application/x-www-form-urlencoded') password = new URLSearchParams(body.toString('utf8')).get('password')
    else throw new ChorusError('CHORUS_ERR_DASHBOARD_UNSUPPORTED_MEDIA_TYPE', [mediaType(req) || 'untyped', 'a form or application/json'])
    if (typeof password !== 'string' || !this.#deps.access.checkPassword(password)) {
      this.#deps.throttle.failure(client)
      return fail(401, new ChorusError('CHORUS_ERR_DASHBOARD_UNAUTHORIZED', ['wrong password']))
    }
    this.#deps.throttle.success(client)
    const { session, cookie } = await this.#deps.access.issueSession(!!(req.socket as TLSSocket).encrypted)
    this.#deps.log.info({ client }, 'signed in')
    if (json) return sendJson(res, 200, { csrf: this.#deps.access.csrfToken(session), expiresAt: new Date(session.expiresAt).toISOString() }, { 'set-cookie': cookie })
    send(res, 303, '', 'text/plain', { location: '/', 'set-cookie': cookie })
  }

  // ---- API -----------------------------------------------------------------------------------

  async #api(req: IncomingMessage, res: ServerResponse, parts: string[], method: string): Promise<void> {
    if (method === 'POST') return this.#action(req, res, parts[0], parts[1], parts[2], parts[3])
    const cred = await this.#guard.require(req, API)
    if (method !== 'GET' && method !== 'HEAD') throw notAllowed(method, `/api/${parts.join('/')}`)
    return answerRead({ access: this.#deps.access, view: this.#deps.view, stream: this.#stream }, req, res, parts, cred)
  }

  async #action(req: IncomingMessage, res: ServerResponse, head: string | undefined, id: string | undefined, action: string | undefined, extra: string | undefined): Promise<void> {
    const cred = await this.#guard.action(req)
    if (head === 'tokens' && id === undefined) return this.#createToken(req, res)
    req.resume()
    if (head === 'tokens' && id !== undefined && action === 'revoke' && extra === undefined) {
      const tokenId = decodeSegment(id)
      if (!(await this.#deps.access.revokeToken(tokenId))) throw new ChorusError('CHORUS_ERR_DASHBOARD_NOT_FOUND', [`live token ${tokenId}`])
      this.#stream.closeOwner(`t:${tokenId}`)
      this.#deps.log.info({ token: tokenId, by: cred.via }, 'token revoked')
      return sendJson(res, 200, { id: tokenId, revoked: true })
    }
    if (head === 'instances' && id !== undefined && action === 'drain' && extra === undefined) return this.#drain(res, decodeSegment(id))
    if (head === 'jobs' && id !== undefined && action === 'retry' && extra === undefined) {
      const jobId = decodeSegment(id)
      if (!/^\d{1,19}$/.test(jobId)) throw new ChorusError('CHORUS_ERR_DASHBOARD_BAD_REQUEST', ['a job id is a positive integer'])
      const retried = await this.#deps.actions.retryJob(jobId)
      this.#deps.log.info({ job: jobId, retried }, 'retry job')
      void this.#deps.view.refresh('all')
      return sendJson(res, 200, { id: jobId, retried })
    }
    throw new ChorusError('CHORUS_ERR_DASHBOARD_NOT_FOUND', [`action ${[head, id, action].filter(Boolean).join('/')}`])
  }

  /** `POST /api/tokens` with an optional `{"name", "ttlSeconds"}`: a new token, shown this once. */
  async #createToken(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req)
    let spec: { name?: unknown; ttlSeconds?: unknown } = {}
    if (body.length > 0) {
      if (mediaType(req) !== 'application/json') throw new ChorusError('CHORUS_ERR_DASHBOARD_UNSUPPORTED_MEDIA_TYPE', [mediaType(req) || 'untyped', 'application/json'])
      const parsed = parseJson(body)
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ChorusError('CHORUS_ERR_DASHBOARD_BAD_REQUEST', ['the body must be {"name": …, "ttlSeconds": …}'])
      spec = parsed as typeof spec
    }
    if (spec.name !== undefined && typeof spec.name !== 'string') throw new ChorusError('CHORUS_ERR_DASHBOARD_BAD_REQUEST', ['name must be a string'])
    if (spec.ttlSeconds !== undefined && typeof spec.ttlSeconds !== 'number') throw new ChorusError('CHORUS_ERR_DASHBOARD_BAD_REQUEST', ['ttlSeconds must be a number'])
    const { record, token } = await this.#deps.access.issueToken({
      ...(spec.name !== undefined ? { name: spec.name } : {}),
      ...(spec.ttlSeconds !== undefined ? { ttlMs: spec.ttlSeconds * 1000 } : {}),
    })
    this.#deps.log.info({ token: record.id, name: record.name }, 'token created')
    return sendJson(res, 201, { ...tokenJson(record, null), token })
  }

  async #drain(res: ServerResponse, id: string): Promise<void> {
    const view = this.#deps.view
    await view.refresh()
    const target = view.snapshot.instances.find((i) => i.id === id && i.status !== 'down')
    if (!target) throw new ChorusError('CHORUS_ERR_DASHBOARD_NOT_FOUND', [`live member ${id}`])
    this.#deps.log.warn({ instance: id, epoch: target.epoch }, 'drain requested')
    if (target.status === 'up') await this.#deps.actions.drain(target)
    const deadline = Date.now() + (this.#deps.drainWaitMs ?? 5000)
    for (;;) {
      const now = view.snapshot.instances.find((i) => i.id === id)
      if (now && now.status !== 'up') return sendJson(res, 200, { instance: now })
      if (Date.now() > deadline) return sendJson(res, 202, { instance: now ?? target, requested: true })
      await new Promise((r) => setTimeout(r, 100))
      await view.refresh()
    }
  }

  // ---- pages ---------------------------------------------------------------------------------

  #asset(res: ServerResponse, name: string): void {
    const a = this.#assets.get(name)
    if (!a) throw new ChorusError('CHORUS_ERR_DASHBOARD_NOT_FOUND', [`/assets/${name}`])
    send(res, 200, a.body, a.type, { 'cache-control': 'no-cache' })
  }

  #loginPage(res: ServerResponse, status: number, error?: string, headers: Record<string, string> = {}): void {
    const page = this.#assets.get('login.html')!.body.toString('utf8')
    const message = error ? `<p class="login-error" role="alert">${escapeHtml(error)}</p>` : ''
    send(res, status, page.replace('<!--error-->', message), 'text/html; charset=utf-8', headers)
  }
}



function escapeHtml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&#39;' })[c]!)
}

