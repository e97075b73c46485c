/**
 * The realtime gateway (`cluster.realtime`): STOMP 1.2 over WebSocket, spanning every instance. A
 * message published on any instance reaches every authorized subscriber on every instance, in one
 * cluster-wide order; a client that reconnects to any instance within the retention window and names
 * the last message id it saw (`chorus-last-id` on SUBSCRIBE) receives what it missed, or an explicit
 * gap notice (`chorus-gap` header) — never silent loss. Authorization is deny-by-default: without an
 * `authorize` that returns `true`, nothing is allowed. This file is the public face and the control
 * plane (ending a user's sessions on every instance); endpoint.ts admits connections, fanout.ts routes
 * messages to them, log.ts orders and keeps them.
 */
import type { Server as HttpServer } from 'node:http'
import type { Server as HttpsServer } from 'node:https'
import type { Logger } from 'pino'
import { channels } from '../bus/channels.js'
import { ChorusError, toError } from '../errors.js'
import type { Subsystem, SubsystemDeps } from '../subsystem.js'
import { parseOptions } from '../util/parse-options.js'
import type { Connection, Principal } from './connection.js'
import { assertDestination, compilePattern } from './destinations.js'
import { openEndpoint, type Attachment, type EndpointHost } from './endpoint.js'
import { FanOut } from './fanout.js'
import { MessageLog } from './log.js'
import { attachOptionsSchema, type AttachOptions } from './options.js'
import { defaultParserLimits } from './parser.js'
import { Presence, type PresenceSnapshot } from './presence.js'

export type { Attachment } from './endpoint.js'
export type { AttachOptions } from './options.js'

export interface AppMessage {
  readonly destination: string
  readonly body: string
  readonly headers: Readonly<Record<string, string>>
  readonly principal: Principal | null
  readonly sessionId: string
}

export type AppHandler = (message: AppMessage) => unknown

export interface RealtimeOptions {
  retention?: { maxAgeMs?: number; maxCount?: number }
  /** Largest body `publish`/`sendToUser` accept. Default 64 KiB. */
  maxBodyBytes?: number
}

/** A control message: every instance ends its own sessions of `user`. */
interface DisconnectRequest {
  readonly op: 'disconnect'
  readonly user: string
  readonly reason: string
}

export class Realtime implements Subsystem {
  readonly name = 'realtime'
  readonly #deps: SubsystemDeps
  readonly #logger: Logger
  readonly #log: MessageLog
  readonly #fanout: FanOut
  readonly #connections = new Set<Connection>()
  readonly #handlers: { match: (d: string) => boolean; fn: AppHandler }[] = []
  readonly #attachments: Attachment[] = []
  readonly #presence: Presence
  readonly #endpointHost: EndpointHost
  #offControl: (() => void) | null = null
  readonly #maxBodyBytes: number
  readonly stats = { published: 0, delivered: 0, connections: 0, gaps: 0 }

  constructor(deps: SubsystemDeps, opts: RealtimeOptions = {}) {
    this.#deps = deps
    this.#logger = deps.log.child({ subsystem: 'realtime' })
    this.#maxBodyBytes = opts.maxBodyBytes ?? defaultParserLimits.maxBodyBytes
    this.#log = new MessageLog({
      sql: deps.db.sql,
      schema: deps.db.schema,
      bus: deps.bus,
      log: this.#logger,
      events: deps.events,
      options: { maxAgeMs: opts.retention?.maxAgeMs ?? 120_000, maxCount: opts.retention?.maxCount ?? 1000, maxQueue: 10_000 },
      deliver: (m) => this.#fanout.deliver(m),
      lost: (from, to) => this.#fanout.lost(from, to),
    })
    this.#fanout = new FanOut(this.#log, this.#logger, this.stats)
    this.#presence = new Presence(deps, this.#logger)
    this.#endpointHost = {
      instanceId: deps.options.instanceId,
      head: () => this.#log.next - 1,
      refusing: () => {
        const state = this.#deps.members.self.state
        return state === 'draining' || state === 'left' ? state : null
      },
      subscribe: (sub, lastId) => this.#fanout.subscribe(sub, lastId),
      unsubscribe: (sub) => this.#fanout.unsubscribe(sub),
      sendFromClient: (conn, destination, headers, body) => this.#fromClient(conn, destination, headers, body),
      accepted: (conn) => {
        this.#connections.add(conn)
        this.stats.connections++
      },
      opened: (conn) => this.#presence.add(conn.sessionId, conn.principal?.name ?? ''),
      closed: (conn) => {
        if (this.#connections.delete(conn)) this.#presence.remove(conn.sessionId)
      },
      closeAll: (code, reason) => {
        for (const c of [...this.#connections]) c.close(code, reason)
      },
    }
  }

  async start(): Promise<void> {
    await this.#log.start()
    this.#offControl = this.#deps.bus.subscribe(channels.realtimeControl, (data) => {
      try {
        const { op, user, reason } = JSON.parse(data) as Partial<Record<keyof DisconnectRequest, unknown>>
        if (op === 'disconnect' && typeof user === 'string' && typeof reason === 'string') this.#disconnectLocal(user, reason)
      } catch {
        /* not a control message of this version */
      }
    })
  }

  /**
   * Serves STOMP over WebSocket on `server` at `opts.path`. Upgrade requests to other paths are
   * left to other listeners, and answered 404 and closed when none takes them; the server gets the
   * timeouts it lacks. Returns a handle whose `close()` stops accepting and closes its connections.
   * Bad options are refused with `CHORUS_ERR_OPTIONS_INVALID` naming the option.
   */
  attach(server: HttpServer | HttpsServer, opts: AttachOptions = {}): Attachment {
    if (server === null || typeof server !== 'object' || typeof server.on !== 'function' || typeof server.off !== 'function') {
      throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', ['server', 'must be a Node HTTP or HTTPS server'], { details: { option: 'server' } })
    }
    const endpoint = openEndpoint(server, parseOptions(attachOptionsSchema, opts), this.#endpointHost)
    this.#attachments.push(endpoint)
    return endpoint
  }

  /** Registers a handler for client SENDs to matching `/app/…` destinations; the RECEIPT follows its completion. */
  handle(pattern: string, fn: AppHandler): () => void {
    if (typeof pattern !== 'string' || !pattern.startsWith('/app/')) {
      throw new ChorusError('CHORUS_ERR_REALTIME_DESTINATION_INVALID', [JSON.stringify(pattern) ?? String(pattern), '/app/…'])
    }
    if (typeof fn !== 'function') throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', ['handler', 'must be a function'], { details: { option: 'handler' } })
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
      checkUser(user)
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
    checkUser(user)
    const why = typeof reason === 'string' ? reason.replace(/[\u0000-\u001f\u007f]/g, ' ').slice(0, 200) : 'signed out'
    this.#disconnectLocal(user, why)
    const request: DisconnectRequest = { op: 'disconnect', user, reason: why }
    await this.#deps.bus.publish(channels.realtimeControl, JSON.stringify(request))
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
    if (headers === null || typeof headers !== 'object' || Array.isArray(headers)) {
      throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', ['headers', 'must be an object of header names and string values'], { details: { option: 'headers' } })
    }
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

  async drain(): Promise<void> {
    // New upgrades are refused while draining (see endpoint.ts); open sessions stay until close.
  }

  async close(): Promise<void> {
    this.#offControl?.()
    for (const a of this.#attachments.splice(0)) a.close()
    await this.#log.close()
    await this.#presence.close()
  }
}

/** A user name as `sendToUser` and `disconnectUser` take it: 1-200 characters without NUL. */
function checkUser(user: unknown): asserts user is string {
  if (typeof user !== 'string' || user.length === 0 || user.length > 200 || user.includes('\u0000')) {
    throw new ChorusError('CHORUS_ERR_REALTIME_USER_INVALID', [JSON.stringify(user) ?? String(user)])
  }
}
