/**
 * The options both framework helpers share (what `useCluster` wires and how), one schema each, so
 * chorus/express and chorus/fastify accept and refuse the same things in the same words.
 */
import { z } from 'zod'
import type { Cluster } from '../cluster.js'
import type { SessionStoreOptions } from '../sessions/store.js'
import { ChorusError } from '../errors.js'
import { loadPeer } from '../util/peer.js'
import { signalOptionsSchema } from './signals.js'

type RealtimeAttachOptions = NonNullable<Parameters<Cluster['realtime']['attach']>[1]>

export const isObject = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v)
export const isFunction = (v: unknown) => typeof v === 'function'

/** A framework's session options: an object, without `store` (the cluster's store is used). */
export const sessionOptions = <T>(framework: string) =>
  z.custom<T>((v) => isObject(v) && !('store' in (v as object)), { error: `must be ${framework} options (without store)` })

export const sharedOptions = {
  /** Options of the cluster's session store (`name`, `ttlMs`, `maxBytes`). */
  sessionStore: z.custom<SessionStoreOptions>(isObject, { error: 'must be an object' }).optional(),
  /** The STOMP gateway's options (`cluster.realtime.attach`), or false. Default `{}` (at `/stomp`; deny all until `authorize` says otherwise). */
  realtime: z.union([z.literal(false), z.custom<RealtimeAttachOptions>(isObject, { error: 'must be attach options or false' })]).default({}),
  /** Path of the Prometheus metrics, or false. Default `/metrics`. */
  metrics: z.union([z.literal(false), z.string().startsWith('/', { error: 'must be a URL path or false' })]).default('/metrics'),
  /** `/health/live` and `/health/ready`. Default true. */
  health: z.boolean({ error: 'must be true or false' }).default(true),
  /** Serves RPC from peers at option `rpc.path`. Default true. */
  rpc: z.boolean({ error: 'must be true or false' }).default(true),
  /** Graceful shutdown on SIGTERM/SIGINT (see `handleSignals`), or false. Default `{}`. */
  signals: z.union([z.literal(false), signalOptionsSchema], { error: 'must be signal options or false' }).prefault({}),
}

/** A framework package from the application, or `CHORUS_ERR_INTEGRATION_MODULE_MISSING` naming the option that can pass it. */
export function requirePeer<T>(name: string, option: string): T {
  const loaded = loadPeer(name)
  if ('error' in loaded) throw new ChorusError('CHORUS_ERR_INTEGRATION_MODULE_MISSING', [name, loaded.error, option])
  return loaded.module as T
}
