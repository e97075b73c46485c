/**
 * The dashboard's options: one strict schema (an unknown key is refused by the schema itself), the
 * public type derived from it, and a bad value refused with `CHORUS_ERR_OPTIONS_INVALID` naming the
 * option before anything connects or listens.
 */
import type { Logger } from 'pino'
import { z } from 'zod'
import { ChorusError } from '../errors.js'
import { parseCallOptions } from '../util/call-options.js'
import { throttleSchema } from './throttle.js'

const TTL = 'must be from 1 second to 365 days, in milliseconds'
const ms = z.number().int('must be a whole number of milliseconds').positive('must be positive')

const schema = z.strictObject({
  databaseUrl: z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// URL'),
  /** Default chorus. */
  schema: z.string().min(1, 'must not be empty').optional(),
  /** At least 8 characters; signs sessions and derives the bearer token. */
  password: z.string(),
  /** Default 8761; 0 picks a free port. */
  port: z.number().int('must be a whole number').min(0, 'must be 0 to 65535').max(65535, 'must be 0 to 65535').optional(),
  /** Default 127.0.0.1. */
  host: z.string().min(1, 'must not be empty').optional(),
  log: z.custom<Logger>((v) => typeof v === 'object' && v !== null && typeof (v as Logger).child === 'function', 'must be a pino logger').optional(),
  throttle: throttleSchema.optional(),
  /** How often the view is read again. Default 1 s. */
  tickMs: ms.optional(),
  /** Lifetime of a sign-in. Default 12 hours. */
  sessionTtlMs: ms.optional(),
  /**
   * Default lifetime of an API token (the one printed at start, and `POST /api/tokens` without
   * `ttlSeconds`). Default: env CHORUS_DASHBOARD_TOKEN_TTL_SEC in seconds, else 30 days; at most 365 days.
   */
  tokenTtlMs: z.number().int(TTL).min(1000, TTL).max(365 * 24 * 3600 * 1000, TTL).optional(),
  /** Connections of the dashboard's one work pool (view, reader, Eureka, credentials, queue). Default 4. */
  poolSize: z.number().int('must be a whole number').min(2, 'must be 2 to 100').max(100, 'must be 2 to 100').optional(),
})

export type DashboardOptions = z.input<typeof schema>

/** Validates `input`; `CHORUS_ERR_OPTIONS_INVALID` names the first bad option. */
export function parseDashboardOptions(input: DashboardOptions): DashboardOptions {
  return parseCallOptions(schema, input, (option, why) => new ChorusError('CHORUS_ERR_OPTIONS_INVALID', [option, why], { details: { option } }))
}
