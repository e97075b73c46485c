/**
 * The realtime gateway: STOMP 1.2 over WebSocket (`ws` in noServer mode, so it shares any Node HTTP
 * server), spanning every instance. A message published on any instance reaches every authorized
 * subscriber on every instance, in one cluster-wide order; a client that reconnects to any instance
 * within the retention window and names the last message id it saw (`chorus-last-id` on SUBSCRIBE)
 * receives what it missed, or an explicit gap notice (`chorus-gap` header) — never silent loss.
 * Authorization is deny-by-default: without an `authorize` that returns `true`, nothing is allowed.
 */
import type { IncomingMessage, Server as HttpServer } from 'node:http'
import type { Server as HttpsServer } from 'node:https'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { WebSocketServer, type WebSocket } from 'ws'
import { ChorusError, toError } from '../errors.js'
import { clientAddress, ConnectionCounts, originCheck, refuseUpgrade, trustedProxies, type AllowedOrigins } from './admission.js'
import type { SubsystemDeps, Subsystem } from '../subsystem.js'
import { Connection, MessageFrames, routeKey, type ConnectionHost, type Principal, type RealtimeLimits, type Subscription } from './connection.js'
import { assertDestination, compilePattern } from './destinations.js'
import { defaultParserLimits } from './parser.js'
import { MessageLog, type LogMessage } from './log.js'
import { Presence, type PresenceSnapshot } from './presence.js'

export interface AppMessage {
  readonly destination: string
  readonly body: string
  readonly headers: Readonly<Record<string, string>>
  readonly principal: Principal | null
  readonly sessionId: string
}

export type AppHandler = (message: AppMessage) => unknown

export interface AttachOptions {
  /** URL path of the WebSocket endpoint. Default `/stomp`. */
  path?: string
  /**
   * Identifies the user: at the upgrade (`headers` undefined; cookies and headers on `request`) and
   * again on CONNECT (its headers, e.g. login/passcode). Return a principal, or null for anonymous;
   * throw to refuse (401 at the upgrade, ERROR on CONNECT). Default: everyone is anonymous.
   */
  authenticate?: (request: IncomingMessage, connectHeaders?: Readonly<Record<string, string>>, current?: Principal | null) => Principal | null | undefined | Promise<Principal | null | undefined>
  /** Decides SUBSCRIBE and SEND. Anything but `true` denies. Default: deny everything. */
  authorize?: (principal: Principal | null, action: 'subscribe' | 'send', destination: string) => boolean | Promise<boolean>
  /** Heart-beats this server offers: send every `send` ms, expects one every `receive` ms. Default 10 000 each. */
  heartbeat?: { send?: number; receive?: number }
  /**
   * Browser origins allowed to open a connection besides this server's own (the `Origin` naming
   * the request's `Host`): full origins such as `https://app.example.com`, or `'*'` for any. Other
   * origins are refused at the upgrade with 403. A request without `Origin` (not a browser) passes.
   * Default: none besides the server's own.
   */
  allowedOrigins?: AllowedOrigins
  /**
   * Addresses of proxies (the balancer, nginx) whose `X-Forwarded-For` names the client, for the
   * per-address limit. Default none: the socket's peer is the client.
   */
  trustProxy?: readonly string[]
  limits?: Partial<RealtimeLimits>
}

export interface RealtimeOptions {
  retention?: { maxAgeMs?: number; maxCount?: number }
  /** Largest body `publish`/`sendToUser` accept. Default 64 KiB. */
  maxBodyBytes?: number
}

export interface Attachment {
  readonly path: string
  close(): void
}

const defaultLimits: RealtimeLimits = {
  ...defaultParserLimits,
  maxSubscriptions: 100,
  maxPendingBytes: 1024 * 1024,
  maxPendingFrames: 64,
  maxReplay: 1000,
  connectTimeoutMs: 10_000,
  maxConnectionsPerPrincipal: 20,
  maxConnectionsPerAddress: 1000,
}

const PROTOCOLS = ['v12.stomp', 'v11.stomp', 'v10.stomp']
/** `disconnectUser` requests, so every instance ends its own sessions of that user. */
const CONTROL_CHANNEL = 'chorus.realtime.control'

export class Realtime implements Subsystem {
  readonly name = 'realtime'
  readonly #deps: SubsystemDeps
  readonly #log: MessageLog
  readonly #routes = new Map<string, Set<Subscription>>()
  readonly #connections = new Set<Connection>()
  readonly #handlers: { match: (d: string) => boolean; fn: AppHandler }[] = []
  readonly #attachments: (Attachment & { wss: WebSocketServer })[] = []
  readonly #presence: Presence
  #offControl: (() => void) | null = null
  readonly #maxBodyBytes: number
  readonly stats = { published: 0, delivered: 0, connections: 0, gaps: 0 }

  constructor(deps: SubsystemDeps, opts: RealtimeOptions = {}) {
    this.#deps = deps
    this.#maxBodyBytes = opts.maxBodyBytes ?? defaultParserLimits.maxBodyBytes
    this.#log = new MessageLog({
      sql: deps.db.sql,
      schema: deps.db.schema,
      bus: deps.bus,
      log: deps.log.child({ subsystem: 'realtime' }),
      events: deps.events,
      options: { maxAgeMs: opts.retention?.maxAgeMs ?? 120_000, maxCount: opts.retention?.maxCount ?? 1000, maxQueue: 10_000 },
      deliver: (m) => this.#route(m),
      lost: (from, to) => this.#lost(from, to),
    })
    this.#presence = new Presence(deps)
  }

  async start(): Promise<void> {
    await this.#log.start()
    this.#offControl = this.#deps.bus.subscribe(CONTROL_CHANNEL, (data) => {
      try {
        const { op, user, reason } = JSON.parse(data) as { op?: unknown; user?: unknown; reason?: unknown }
        if (op === 'disconnect' && typeof user === 'string' && typeof reason === 'string') this.#disconnectLocal(user, reason)
      } catch {
        /* not a control message of this version */
      }
    })
  }

  /**
   * Serves STOMP over WebSocket on `server` at `opts.path`. Upgrade requests to other paths are
   * left to other listeners, and answered 404 and closed when none takes them (refuseUnserved);
   * the server gets the timeouts it lacks. Returns a handle whose `close()` stops accepting and
   * closes its connections.
   */
  attach(server: HttpServer | HttpsServer, opts: AttachOptions = {}): Attachment {
    const path = opts.path ?? '/stomp'
    const limits: RealtimeLimits = { ...defaultLimits, ...opts.limits }
    for (const k of ['maxConnectionsPerPrincipal', 'maxConnectionsPerAddress'] as const) {
      if (!Number.isSafeInteger(limits[k]) || limits[k] < 1) throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', [`limits.${k}`, 'must be a positive integer'], { details: { option: `limits.${k}` } })
    }
    const checkOrigin = originCheck(opts.allowedOrigins)
    const trusted = trustedProxies(opts.trustProxy)
    // Connections of this endpoint per client address and per principal (the name each session is counted under).
    const counts = new ConnectionCounts()
    const countedAs = new Map<Connection, string>()
    const heartbeat = { send: opts.heartbeat?.send ?? 10_000, receive: opts.heartbeat?.receive ?? 10_000 }
    const authenticate = opts.authenticate
    const authorize = opts.authorize
    const wss = new WebSocketServer({
      noServer: true,
      // Room for the parser to see an oversized frame and answer with ERROR; a WebSocket message
      // beyond twice the frame limit is cut off by ws itself (close 1009, no ERROR).
      maxPayload: limits.maxFrameBytes * 2 + 1024,
      handleProtocols: (offered: Set<string>) => PROTOCOLS.find((p) => offered.has(p)) ?? false,
    })
    const host: ConnectionHost = {
      limits,
      heartbeat,
      serverName: 'chorus/0.1',
      head: () => this.#log.next - 1,
      instanceId: this.#deps.options.instanceId,
      authenticateConnect: async (request, headers, atUpgrade) => (authenticate ? ((await authenticate(request, headers, atUpgrade)) ?? atUpgrade ?? null) : atUpgrade),
      authorize: async (principal, action, destination) => (authorize ? (await authorize(principal, action, destination)) === true : false),
      subscribe: (sub, lastId) => this.#subscribe(sub, lastId),
      unsubscribe: (sub) => this.#unsubscribe(sub),
      sendFromClient: (conn, destination, headers, body) => this.#fromClient(conn, destination, headers, body),
      admit: (principal) =>
        principal !== null && counts.principal(principal.name) >= limits.maxConnectionsPerPrincipal
          ? `${limits.maxConnectionsPerPrincipal} connections of this user on this instance (maxConnectionsPerPrincipal)`
          : null,
      opened: (conn) => {
        this.#presence.add(conn.sessionId, conn.principal?.name ?? '')
        if (conn.principal) {
          counts.addPrincipal(conn.principal.name)
          countedAs.set(conn, conn.principal.name)
        }
      },
      closed: (conn) => {
        if (this.#connections.delete(conn)) this.#presence.remove(conn.sessionId)
        const name = countedAs.get(conn)
        if (name !== undefined) {
          countedAs.delete(conn)
          counts.removePrincipal(name)
        }
      },
    }
    const onUpgrade = (request: IncomingMessage, socket: Duplex, head: Buffer) => {
      const url = request.url ?? '/'
      const pathname = url.split('?')[0]
      if (pathname !== path) return refuseUnserved(server, socket, pathname ?? '', path)
      if (socket.destroyed) return
      // Refused before any work: a foreign page (cross-site WebSocket hijacking), then an address
      // over its share. The address slot is held until the socket closes, whatever happens next.
      const origin = checkOrigin(request)
      if (!origin.ok) return refuseUpgrade(socket, 403, 'CHORUS_ERR_REALTIME_ORIGIN_FORBIDDEN', [origin.why])
      const address = clientAddress(request, trusted)
      if (!counts.takeAddress(address, limits.maxConnectionsPerAddress)) {
        return refuseUpgrade(socket, 429, 'CHORUS_ERR_REALTIME_TOO_MANY_CONNECTIONS', [`${limits.maxConnectionsPerAddress} from this address (maxConnectionsPerAddress)`])
      }
      socket.once('close', () => counts.releaseAddress(address))
      void (async () => {
        let principal: Principal | null = null
        try {
          principal = authenticate ? ((await authenticate(request, undefined, null)) ?? null) : null
        } catch {
          return refuseUpgrade(socket, 401, 'CHORUS_ERR_REALTIME_UNAUTHENTICATED', ['the upgrade request was refused by authenticate'])
        }
        if (this.#deps.members.self.state === 'draining' || this.#deps.members.self.state === 'left') {
          return refuseUpgrade(socket, 503, 'CHORUS_ERR_CLUSTER_CLOSED', [this.#deps.members.self.state, 'a new connection'], { 'Retry-After': '1' })
        }
        const over = principal ? host.admit(principal) : null
        if (over !== null) return refuseUpgrade(socket, 429, 'CHORUS_ERR_REALTIME_TOO_MANY_CONNECTIONS', [over])
        wss.handleUpgrade(request, socket, head, (ws: WebSocket) => {
          const conn = new Connection(ws, request, principal, host, socket)
          this.#connections.add(conn)
          this.stats.connections++
        })
      })()
    }
    server.on('upgrade', onUpgrade)
    const unserve = serve(server, path)
    const attachment = {
      path,
      wss,
      close: () => {
        server.off('upgrade', onUpgrade)
        unserve()
        for (const c of [...this.#connections]) c.close(1012, 'service restart')
        wss.close()
      },
    }
    this.#attachments.push(attachment)
    return { path, close: attachment.close }
  }

  /** Registers a handler for client SENDs to matching `/app/…` destinations; the RECEIPT follows its completion. */
  handle(pattern: string, fn: AppHandler): () => void {
    if (!pattern.startsWith('/app/')) throw new ChorusError('CHORUS_ERR_REALTIME_DESTINATION_INVALID', [JSON.stringify(pattern), '/app/…'])
    const entry = { match: compilePattern(pattern), fn }
    this.#handlers.push(entry)
    return () => {
      const i = this.#handlers.indexOf(entry)
      if (i >= 0) this.#handlers.splice(i, 1)
    }
  }

  /** Sends `body` to every subscriber of the `/topic/…` destination on every instance; resolves with the message id. */
  publish(destination: string, body: unknown, headers: Record<string, string> = {}): Promise<number> {
    try {
      assertDestination(destination, ['topic'])
      return this.#append(destination, '', body, headers)
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /** Sends to every session of `user` (on every instance) subscribed to `/user/queue/…` `destination`. */
  sendToUser(user: string, destination: string, body: unknown, headers: Record<string, string> = {}): Promise<number> {
    try {
      if (typeof user !== 'string' || user.length === 0 || user.length > 200 || user.includes('\u0000')) {
        throw new ChorusError('CHORUS_ERR_REALTIME_USER_INVALID', [JSON.stringify(user)])
      }
      assertDestination(destination, ['user'])
      return this.#append(destination, user, body, headers)
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /**
   * Ends every session of `user` on every instance: an ERROR frame (`CHORUS_ERR_REALTIME_UNAUTHENTICATED:
   * session ended: <reason>`), then close 1008. Call it at sign-out, once `authenticate` refuses the
   * user's old credentials, so that a client reconnecting is refused too. This instance's sessions end
   * before it resolves; other instances' through the bus (at-most-once, like every bus message).
   */
  async disconnectUser(user: string, reason = 'signed out'): Promise<void> {
    if (typeof user !== 'string' || user.length === 0 || user.length > 200 || user.includes('\u0000')) {
      throw new ChorusError('CHORUS_ERR_REALTIME_USER_INVALID', [JSON.stringify(user)])
    }
    const why = typeof reason === 'string' ? reason.replace(/[\u0000-\u001f\u007f]/g, ' ').slice(0, 200) : 'signed out'
    this.#disconnectLocal(user, why)
    await this.#deps.bus.publish(CONTROL_CHANNEL, JSON.stringify({ op: 'disconnect', user, reason: why }))
  }

  #disconnectLocal(user: string, reason: string): void {
    for (const conn of [...this.#connections]) {
      if (conn.principal?.name === user) conn.refuse('CHORUS_ERR_REALTIME_UNAUTHENTICATED', `session ended: ${reason}`)
    }
  }

  /** Sessions connected cluster-wide, per instance and per user (live instances only). */
  presence(): Promise<PresenceSnapshot> {
    return this.#presence.snapshot()
  }

  /** Sessions connected to this instance. */
  get localSessions(): number {
    return this.#connections.size
  }

  #append(destination: string, user: string, body: unknown, headers: Record<string, string>): Promise<number> {
    let text: string
    const h: Record<string, string> = {}
    for (const [k, v] of Object.entries(headers)) {
      if (typeof v !== 'string' || /[\r\n\u0000]/.test(k + v) || k.length === 0) throw new ChorusError('CHORUS_ERR_REALTIME_DESTINATION_INVALID', [JSON.stringify(k), 'header names and values without CR, LF or NUL'])
      h[k] = v
    }
    if (typeof body === 'string') text = body
    else {
      try {
        text = JSON.stringify(body) ?? 'null'
      } catch (err) {
        throw new ChorusError('CHORUS_ERR_STATE_VALUE_NOT_SERIALIZABLE', [toError(err).message], { cause: err })
      }
      h['content-type'] ??= 'application/json'
    }
    const bytes = Buffer.byteLength(text)
    if (bytes > this.#maxBodyBytes) throw new ChorusError('CHORUS_ERR_REALTIME_BODY_TOO_LARGE', [bytes, this.#maxBodyBytes], { details: { bytes, limit: this.#maxBodyBytes } })
    this.stats.published++
    return this.#log.publish(destination, user, h, text)
  }

  async #fromClient(conn: Connection, destination: string, headers: Readonly<Record<string, string>>, body: string): Promise<void> {
    if (destination.startsWith('/topic/')) {
      const forward: Record<string, string> = {}
      if (headers['content-type']) forward['content-type'] = headers['content-type']
      await this.#append(destination, '', body, forward)
      return
    }
    const handler = this.#handlers.find((h) => h.match(destination))
    if (!handler) throw new ChorusError('CHORUS_ERR_REALTIME_DESTINATION_INVALID', [JSON.stringify(destination), 'a destination with a handler'])
    await handler.fn({ destination, body, headers, principal: conn.principal, sessionId: conn.sessionId })
  }

  #route(m: LogMessage): void {
    const subs = this.#routes.get(routeKey(m.destination, m.user))
    if (!subs) return
    const frames = new MessageFrames(m)
    for (const sub of subs) {
      this.stats.delivered++
      sub.deliver(m, frames)
    }
  }

  #lost(from: number, to: number): void {
    this.stats.gaps++
    this.#deps.log.warn({ from, to }, 'realtime: messages could not be read back; sending gap notices')
    for (const subs of this.#routes.values()) for (const sub of subs) sub.gap('lost')
  }

  async #subscribe(sub: Subscription, lastId: string | undefined): Promise<void> {
    let set = this.#routes.get(sub.key)
    if (!set) this.#routes.set(sub.key, (set = new Set()))
    set.add(sub)
    if (lastId === undefined) return
    const after = /^\d{1,15}$/.test(lastId) ? Number(lastId) : NaN
    if (!Number.isSafeInteger(after)) {
      sub.gap('unknown-id')
      return
    }
    if (after >= this.#log.next) {
      // Seen elsewhere but not yet here: skip up to it; an id no instance ever issued is a gap.
      if (after <= (await this.#log.head())) sub.lastSent = after
      else sub.gap('unknown-id')
      return
    }
    sub.beginReplay()
    try {
      const { messages, complete, swept } = await this.#log.replay(sub.destination, sub.user, after, sub.connection.limits.maxReplay)
      if (swept || !complete) {
        this.stats.gaps++
        sub.lastSent = Math.max(sub.lastSent, after)
        sub.gap(swept ? 'retention' : 'too-many')
      } else {
        sub.lastSent = Math.max(sub.lastSent, after)
        for (const m of messages) sub.send(m)
      }
    } catch (err) {
      this.#deps.log.warn({ err: toError(err) }, 'realtime: replay failed')
      sub.gap('replay-failed')
    } finally {
      sub.endReplay()
    }
  }

  #unsubscribe(sub: Subscription): void {
    const set = this.#routes.get(sub.key)
    set?.delete(sub)
    if (set?.size === 0) this.#routes.delete(sub.key)
  }

  async drain(): Promise<void> {
    // New upgrades are refused while draining (see onUpgrade); open sessions stay until close.
  }

  async close(): Promise<void> {
    this.#offControl?.()
    for (const a of this.#attachments.splice(0)) a.close()
    await this.#log.close()
    await this.#presence.close()
  }
}

/**
 * Upgrades to paths that no attachment serves. Node hands every upgrade request to the 'upgrade'
 * listeners, and one that none of them answers holds its socket for good. The first Chorus
 * attachment on a server answers such a request 404 and closes it: at once when only Chorus
 * listens for upgrades there, else after a grace in which another listener may take it (anything
 * written to the socket counts as taken), as engine.io does. Attaching also gives the server the
 * header, request and keep-alive timeouts it lacks (those set to 0 get Node's defaults).
 */
const UNSERVED_GRACE_MS = 1000
/** How long a refused connection may linger while its client reads the answer. */
const LINGER_MS = 2000
const servedPaths = new WeakMap<HttpServer | HttpsServer, string[]>()

function serve(server: HttpServer | HttpsServer, path: string): () => void {
  const paths = servedPaths.get(server) ?? []
  servedPaths.set(server, paths)
  paths.push(path)
  if (!server.headersTimeout) server.headersTimeout = Math.min(60_000, server.requestTimeout || 60_000)
  if (!server.requestTimeout) server.requestTimeout = 300_000
  if (!server.keepAliveTimeout) server.keepAliveTimeout = 5000
  return () => {
    const i = paths.indexOf(path)
    if (i >= 0) paths.splice(i, 1)
  }
}

function refuseUnserved(server: HttpServer | HttpsServer, socket: Duplex, pathname: string, path: string): void {
  const paths = servedPaths.get(server) ?? []
  if (paths.includes(pathname) || paths[0] !== path) return // another attachment serves it, or answers for all
  const refuse = () => {
    const s = socket as Socket
    if (s.destroyed || !s.writable || s.bytesWritten > 0) return // another listener took it
    s.on('error', () => undefined)
    s.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
    s.resume() // discard what the client still sends, and see it close
    setTimeout(() => s.destroy(), LINGER_MS).unref()
  }
  if (server.listenerCount('upgrade') <= paths.length) refuse()
  else setTimeout(refuse, UNSERVED_GRACE_MS).unref()
}
