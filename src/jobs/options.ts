/**
 * The option objects of `define`, `enqueue` / `enqueueMany` items, `cron` and `singleton`, each one
 * zod strict schema (unknown keys are refused by the schema itself). A failure becomes the area's
 * typed error naming the first bad option (`CHORUS_ERR_JOB_OPTIONS_INVALID`, `…_CRON_…`,
 * `…_SINGLETON_…`), thrown before anything is written or scheduled.
 */
import { z } from 'zod'
import { ChorusError, type ErrorCode } from '../errors.js'
import { parseCallOptions } from '../util/call-options.js'
import { DEFAULTS, MAX_KEY_CHARS } from './limits.js'
import type { BackoffFunction, BackoffOptions, DefineOptions, EnqueueOptions } from './types.js'

function int(min: number, max: number) {
  const why = `must be an integer from ${min} to ${max}`
  return z.number({ error: why }).int(why).min(min, why).max(max, why)
}

const anObject = { error: (issue: { code: string }) => (issue.code === 'invalid_type' ? 'must be an object' : undefined) }
const aFunction = <F>() => z.custom<F>((v) => typeof v === 'function', { error: 'must be a function' })
const ROLES = 'must be an array of non-empty strings'
const roles = z.custom<readonly string[]>((v) => Array.isArray(v) && v.every((r) => typeof r === 'string' && r.length > 0), { error: ROLES })
const transactional = z.boolean({ error: 'must be a boolean' })
const timeoutMs = int(1, 2 ** 31 - 1)
const retries = int(0, 1000)

const NUMBER = 'must be a finite number ≥ 0'
const backoffNumber = z.number({ error: NUMBER }).min(0, NUMBER)
const backoff = z.union(
  [
    aFunction<BackoffFunction>(),
    z.strictObject(
      { delayMs: backoffNumber.optional(), factor: backoffNumber.optional(), maxDelayMs: backoffNumber.optional(), jitter: backoffNumber.max(1, 'must be at most 1').optional() },
      anObject,
    ),
  ],
  { error: 'must be an object or a function' },
)

export const defineOptions = z.strictObject(
  { concurrency: int(1, 1000).optional(), timeoutMs: timeoutMs.optional(), retries: retries.optional(), backoff: backoff.optional(), roles: roles.optional(), transactional: transactional.optional() },
  anObject,
)

const KEY = `must be a non-empty string of at most ${MAX_KEY_CHARS} characters without NUL`
const PRIORITY = 'must be an integer between -1000000 and 1000000'
const enqueueFields = {
  runAt: z.date({ error: 'must be a valid Date' }).optional(),
  /** Negative delays pass here: they get their own error code (`CHORUS_ERR_JOB_DELAY_INVALID`). */
  delayMs: z.number({ error: 'must be a finite number' }).optional(),
  key: z
    .string({ error: KEY })
    .min(1, KEY)
    .max(MAX_KEY_CHARS, KEY)
    .refine((k) => !k.includes('\u0000'), KEY)
    .optional(),
  priority: z.number({ error: PRIORITY }).int(PRIORITY).min(-1_000_000, PRIORITY).max(1_000_000, PRIORITY).optional(),
}

export const enqueueOptions = z.strictObject(enqueueFields, anObject)

/** An `enqueueMany` item: a job's name and payload (checked on their own) beside its enqueue options. */
export const enqueueManyItem = z.strictObject({ name: z.unknown().optional(), payload: z.unknown().optional(), ...enqueueFields }, anObject)

function timeZone(issue: { input?: unknown }): string {
  return `"${String(issue.input)}" is not an IANA time zone`
}

export const cronOptions = z.strictObject(
  {
    timezone: z
      .string({ error: timeZone })
      .refine(
        (tz) => {
          try {
            new Intl.DateTimeFormat('en-US', { timeZone: tz })
            return true
          } catch {
            return false
          }
        },
        { error: timeZone },
      )
      .nullable()
      .optional(),
    roles: roles.optional(),
    missed: z.enum(['skip', 'run-once'], { error: 'must be "skip" or "run-once"' }).optional(),
    transactional: transactional.optional(),
    timeoutMs: timeoutMs.optional(),
    retries: retries.optional(),
  },
  anObject,
)

export const singletonOptions = z.strictObject({ start: aFunction<(signal: AbortSignal) => unknown>(), roles: roles.optional() }, anObject)

/** `input` as `schema` reads it, or `code`'s error naming the first bad option (in the words of every options check). */
export function checkOptions<S extends z.ZodType>(schema: S, input: unknown, code: ErrorCode): z.output<S> {
  return parseCallOptions(schema, input, (option, why) => new ChorusError(code, [option, why], { details: { option } }))
}

export interface CheckedDefine {
  concurrency: number
  timeoutMs: number
  retries: number
  backoff: BackoffFunction
  roles: readonly string[]
  transactional: boolean
}

/** `define`'s options with their defaults; `defaults.retries` differs for cron ticks. */
export function checkDefineOptions(opts: DefineOptions | undefined, defaults: { retries: number } = DEFAULTS): CheckedDefine {
  const o = checkOptions(defineOptions, opts ?? {}, 'CHORUS_ERR_JOB_OPTIONS_INVALID')
  return {
    concurrency: o.concurrency ?? DEFAULTS.concurrency,
    timeoutMs: o.timeoutMs ?? DEFAULTS.timeoutMs,
    retries: o.retries ?? defaults.retries,
    backoff: toBackoff(o.backoff),
    roles: Object.freeze([...(o.roles ?? [])]),
    transactional: o.transactional ?? false,
  }
}

function toBackoff(b: BackoffOptions | BackoffFunction | undefined): BackoffFunction {
  if (typeof b === 'function') return b
  const d = { ...DEFAULTS.backoff, ...b }
  return (attempt) => {
    const base = Math.min(d.maxDelayMs, d.delayMs * d.factor ** Math.max(0, attempt - 1))
    return Math.max(0, Math.round(base * (1 + d.jitter * (2 * Math.random() - 1))))
  }
}

export interface CheckedEnqueue {
  /** Epoch milliseconds, or -1 when `delayMs` applies. */
  atMs: number
  delayMs: number
  /** '' for none. */
  key: string
  priority: number
}

/** `enqueue`'s options (or an `enqueueMany` item's, with `schema`), with their defaults. */
export function checkEnqueueOptions(opts: EnqueueOptions | undefined, schema: typeof enqueueOptions | typeof enqueueManyItem = enqueueOptions): CheckedEnqueue {
  if (opts === undefined) return { atMs: -1, delayMs: 0, key: '', priority: 0 }
  const { runAt, delayMs, key, priority } = checkOptions(schema, opts, 'CHORUS_ERR_JOB_OPTIONS_INVALID')
  if (runAt !== undefined && delayMs !== undefined) {
    throw new ChorusError('CHORUS_ERR_JOB_OPTIONS_INVALID', ['runAt', 'give runAt or delayMs, not both'], { details: { option: 'runAt' } })
  }
  if (delayMs !== undefined && delayMs < 0) throw new ChorusError('CHORUS_ERR_JOB_DELAY_INVALID', [delayMs], { details: { option: 'delayMs' } })
  return { atMs: runAt === undefined ? -1 : Math.max(0, runAt.getTime()), delayMs: delayMs ?? 0, key: key ?? '', priority: priority ?? 0 }
}
