/**
 * `chorus/express`: one call puts an Express app on the cluster — signed RPC between instances,
 * `/health/live` and `/health/ready`, `/metrics`, sessions in the cluster's store (express-session),
 * and, on the HTTP server `app.listen` makes, the STOMP gateway, request metrics and a graceful
 * shutdown on SIGTERM/SIGINT. Everything goes through the cluster's public API; each part can be
 * turned off.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { z } from 'zod'
import type { Cluster } from '../cluster.js'
import type { SessionStore } from '../sessions/store.js'
import { parseOptions } from '../util/parse-options.js'
import { isFunction, requirePeer, sessionOptions, sharedOptions } from './options.js'
import { handleSignals } from './signals.js'

export { createCluster } from '../create.js'
export { handleSignals, type SignalOptions } from './signals.js'
export { serveArea, type ServeOptions, type FileHandler, type ServableArea } from '../files/serve.js'

type Next = (err?: unknown) => void
type Handler = (req: IncomingMessage, res: ServerResponse, next: Next) => void

/** The part of an Express app (or a Connect-like app with `listen`) this needs. */
export interface ExpressAppLike {
  use(handler: Handler): unknown
  get(path: string, handler: Handler): unknown
  /** `any`: Express declares several overloads, which only a rest of `any` accepts all of. */
  listen: (...args: any[]) => Server
}

/** express-session's options, but `store`: the cluster's store is used. */
export interface ExpressSessionOptions {
  secret: string | string[]
  [option: string]: unknown
}

const expressOptionsSchema = z.strictObject(
  {
    /** Mounts express-session on the cluster's session store with these options. Default: no sessions. */
    session: sessionOptions<ExpressSessionOptions>('express-session').optional(),
    /** The express-session module. Default: loaded from the application. */
    expressSession: z.custom<(opts: object) => Handler>(isFunction, { error: 'must be the express-session module' }).optional(),
    ...sharedOptions,
  },
  { error: 'must be an object' },
)

export type ExpressOptions = z.input<typeof expressOptionsSchema>

export interface ExpressIntegration {
  /** The session store express-session uses, or null without `session`. */
  readonly store: SessionStore | null
  /**
   * Wires a server the application made itself (`http.createServer(app)`): the STOMP gateway,
   * request metrics, and stopping it on a signal. Servers from `app.listen` are wired already.
   */
  attach(server: Server): void
  /** Removes the signal handlers. */
  close(): void
}

/**
 * Wires `app` to `cluster`. Call it right after `express()`, before body parsers (RPC reads its
 * own bodies) and routes (they then see `req.session`).
 */
export function useCluster(app: ExpressAppLike, cluster: Cluster, opts: ExpressOptions = {}): ExpressIntegration {
  const o = parseOptions(expressOptionsSchema, opts)
  if (o.rpc) app.use(cluster.rpc.handler)
  if (o.health) app.use(cluster.health.handler)
  if (o.metrics !== false) app.get(o.metrics, (req, res) => cluster.metrics.handler(req, res))
  let store: SessionStore | null = null
  if (o.session) {
    const session = o.expressSession ?? requirePeer<(opts: object) => Handler>('express-session', 'expressSession')
    store = cluster.sessions.store({ ...o.sessionStore, session: session as unknown as { Store: unknown } })
    app.use(session({ ...o.session, store }))
  }
  const servers: Server[] = []
  const offSignals = o.signals === false ? () => undefined : handleSignals(cluster, { ...o.signals, servers })
  const integration: ExpressIntegration = {
    store,
    attach(server) {
      if (servers.includes(server)) return
      servers.push(server)
      if (o.realtime !== false) cluster.realtime.attach(server, o.realtime)
      if (o.metrics !== false) cluster.metrics.instrument(server)
    },
    close: offSignals,
  }
  const listen = app.listen
  app.listen = function (this: unknown, ...args: unknown[]): Server {
    const server = listen.apply(this, args)
    integration.attach(server)
    return server
  }
  return integration
}
