/**
 * The balancer's options: one strict schema (an unknown key is refused by the schema itself), the
 * public type derived from it, every default in one object, and a bad value refused with
 * `CHORUS_ERR_OPTIONS_INVALID` naming the option before anything listens.
 */
import { z } from 'zod'
import { ChorusError } from '../errors.js'
import { parseCallOptions } from '../util/call-options.js'

const ms = z.number().int('must be a whole number of milliseconds').positive('must be positive').max(2_147_483_647, 'must be at most 2147483647')
const count = z.number().int('must be a whole number').positive('must be positive')
const cookieName = z.string().regex(/^[A-Za-z0-9_]+$/, 'use letters, digits and _ only')

export const strategies = ['round-robin', 'least-connections'] as const
export type Strategy = (typeof strategies)[number]

const schema = z.strictObject({
  port: z.number().int('must be a whole number').min(0, 'must be 0 to 65535').max(65535, 'must be 0 to 65535'),
  /** Default 127.0.0.1. */
  host: z.string().min(1, 'must not be empty').optional(),
  /** Default round-robin. */
  strategy: z.enum(strategies, { error: `must be one of ${strategies.join(', ')}` }).optional(),
  /** Pin each client to one instance with a signed cookie. Default false. */
  sticky: z.boolean().optional(),
  /** Default chorus_affinity. */
  stickyCookie: cookieName.optional(),
  /** Signs the affinity cookie. */
  secret: z.string().min(1, 'must not be empty'),
  /** Readiness path each instance answers (see `cluster.health`), probed every second. Default `/health/ready`. */
  healthPath: z.string().startsWith('/', 'must start with /').optional(),
  /** How long a member that refused a connection is left out before it is probed again. Default 5 s. */
  ejectMs: ms.optional(),
  /** Keep-alive connections per upstream. Default 64. */
  connectionsPerUpstream: count.max(4096, 'must be at most 4096').optional(),
  /** Largest request head accepted. Default 16 KiB (larger: 431). */
  maxHeaderBytes: count.max(1024 * 1024, 'must be at most 1 MiB').optional(),
  /** Time allowed for an upstream to answer headers (and a WebSocket handshake). Default 60 s. */
  upstreamTimeoutMs: ms.optional(),
  /** Longest pause between two pieces of an upstream's answer. Default 60 s. */
  upstreamBodyTimeoutMs: ms.optional(),
  /** Time a client has to send a request's headers. Default 20 s (then 408). */
  headersTimeoutMs: ms.optional(),
  /** Time a client has to send a whole request, headers and body. Default 300 s (then 408). */
  requestTimeoutMs: ms.optional(),
  /** Longest pause in a request body before the request is refused. Default 30 s (then 408). */
  bodyTimeoutMs: ms.optional(),
  /** How long an idle client connection is kept open between requests. Default 5 s. */
  keepAliveTimeoutMs: ms.optional(),
  /** Longest wait for a client that does not read its answer before the connection is cut. Default 60 s. */
  sendTimeoutMs: ms.optional(),
  /** Request bodies up to this size are read whole before an instance is chosen (and can be retried elsewhere); larger ones stream over a connection of their own. Default 64 KiB. */
  bodyBufferBytes: count.max(64 * 1024 * 1024, 'must be at most 64 MiB').optional(),
  /** Requests and WebSocket handshakes one client address may have in flight at once; 0 for no limit. Default 256 (more: 429). */
  maxRequestsPerClient: z.number().int('must be a whole number').min(0, 'must be 0 or more').optional(),
  /**
   * Addresses or CIDRs of proxies in front of the balancer whose `X-Forwarded-*`, `Forwarded` and
   * `X-Real-IP` are believed (kept and extended). Default none: those headers are always replaced.
   */
  trustProxy: z.array(z.string()).readonly().optional(),
  /** Grace before tunnels to a draining member are cut (the instance itself closes them first with 1012). Default 10 s. */
  drainGraceMs: ms.optional(),
})

export type BalancerOptions = z.input<typeof schema>
export type ResolvedBalancerOptions = Required<Omit<BalancerOptions, 'trustProxy'>> & { readonly trustProxy: readonly string[] }

export const balancerDefaults = {
  host: '127.0.0.1',
  strategy: 'round-robin',
  sticky: false,
  stickyCookie: 'chorus_affinity',
  healthPath: '/health/ready',
  ejectMs: 5000,
  connectionsPerUpstream: 64,
  maxHeaderBytes: 16 * 1024,
  upstreamTimeoutMs: 60_000,
  upstreamBodyTimeoutMs: 60_000,
  headersTimeoutMs: 20_000,
  requestTimeoutMs: 300_000,
  bodyTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5000,
  sendTimeoutMs: 60_000,
  bodyBufferBytes: 64 * 1024,
  maxRequestsPerClient: 256,
  trustProxy: [],
  drainGraceMs: 10_000,
} as const satisfies Omit<ResolvedBalancerOptions, 'port' | 'secret'>

/** Validates `input` and fills in the defaults; `CHORUS_ERR_OPTIONS_INVALID` names the first bad option. */
export function resolveBalancerOptions(input: BalancerOptions): ResolvedBalancerOptions {
  const given = parseCallOptions(schema, input, (option, why) => new ChorusError('CHORUS_ERR_OPTIONS_INVALID', [option, why], { details: { option } }))
  const defined = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined))
  return { ...balancerDefaults, ...defined } as unknown as ResolvedBalancerOptions
}
