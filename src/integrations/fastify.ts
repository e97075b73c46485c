/**
 * `chorus/fastify`: one call puts a Fastify app on the cluster — signed RPC between instances,
 * `/health/live` and `/health/ready`, `/metrics`, sessions in the cluster's store
 * (@fastify/session, with @fastify/cookie), the STOMP gateway and request metrics on the app's
 * server, and a graceful shutdown on SIGTERM/SIGINT that closes the app. Everything goes through
 * the cluster's public API; each part can be turned off.
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
export { fastifyServeArea, type ServeOptions, type ServableArea } from '../files/serve.js'


/**
 * The part of a Fastify instance this needs. `any` in `register`: Fastify's plugin and option
 * types are generic over the server and type provider, which only `any` accepts all of.
 */
export interface FastifyAppLike {
  readonly server: Server
  register(plugin: any, opts?: any): unknown
  route(opts: { method: string[]; url: string; handler: (request: { raw: IncomingMessage }, reply: { hijack(): void; raw: ServerResponse }) => unknown }): unknown
  get(path: string, handler: (request: any, reply: any) => unknown): unknown
  hasPlugin(name: string): boolean
  close(): PromiseLike<unknown>
}

/** @fastify/session's options, but `store`: the cluster's store is used. */
export interface FastifySessionOptions {
  secret: string | string[]
  [option: string]: unknown
}

const fastifyOptionsSchema = z.strictObject(
  {
    /** Registers @fastify/session (and @fastify/cookie, unless registered) on the cluster's store. Default: no sessions. */
    session: sessionOptions<FastifySessionOptions>('@fastify/session').optional(),
    /** The @fastify/session and @fastify/cookie modules. Default: loaded from the application. */
    fastifySession: z.custom<object>(isFunction, { error: 'must be the @fastify/session module' }).optional(),
    fastifyCookie: z.custom<object>(isFunction, { error: 'must be the @fastify/cookie module' }).optional(),
    ...sharedOptions,
  },
  { error: 'must be an object' },
)

export type FastifyOptions = z.input<typeof fastifyOptionsSchema>

export interface FastifyIntegration {
  /** The session store @fastify/session uses, or null without `session`. */
  readonly store: SessionStore | null
  /** Removes the signal handlers. */
  close(): void
}

/** Wires `app` to `cluster`. Call it before the routes that use `request.session`. */
export function useCluster(app: FastifyAppLike, cluster: Cluster, opts: FastifyOptions = {}): FastifyIntegration {
  const o = parseOptions(fastifyOptionsSchema, opts)
  if (o.rpc) app.register(cluster.rpc.fastify)
  if (o.health) cluster.health.fastify(app)
  if (o.metrics !== false) {
    app.route({
      method: ['GET', 'HEAD'],
      url: o.metrics,
      handler: (request, reply) => {
        reply.hijack()
        cluster.metrics.handler(request.raw, reply.raw)
      },
    })
  }
  let store: SessionStore | null = null
  if (o.session) {
    if (!app.hasPlugin('@fastify/cookie')) app.register(o.fastifyCookie ?? requirePeer('@fastify/cookie', 'fastifyCookie'))
    store = cluster.sessions.store(o.sessionStore)
    app.register(o.fastifySession ?? requirePeer('@fastify/session', 'fastifySession'), { ...o.session, store })
  }
  if (o.realtime !== false) cluster.realtime.attach(app.server, o.realtime)
  if (o.metrics !== false) cluster.metrics.instrument(app.server)
  const close = o.signals === false ? () => undefined : handleSignals(cluster, { ...o.signals, stop: () => app.close() })
  return { store, close }
}
