/**
 * Limits, defaults and input checks for jobs, cron and singletons. Every check throws a typed
 * `ChorusError` before anything is written, so bad input never enqueues or schedules anything.
 */
import { ChorusError, type ErrorCode } from '../errors.js'
import type { BackoffFunction, BackoffOptions, DefineOptions, EnqueueOptions } from './types.js'

/** Largest payload, as JSON text. */
export const MAX_PAYLOAD_BYTES = 256 * 1024
/** Most jobs in one `enqueueMany`. */
export const MAX_BATCH = 10_000
/** Most jobs claimed per name in one claim. */
export const CLAIM_BATCH = 50
/** Longest error text kept on a job. */
export const MAX_ERROR_CHARS = 4000
/** Longest dedupe key. */
export const MAX_KEY_CHARS = 512
/** A safety claim (and singleton check) runs this often even without wake-ups. */
export const SAFETY_POLL_MS = 5000
/** How long a drain waits for running handlers before aborting them and handing their jobs back. */
export const DRAIN_GRACE_MS = 10_000

/**
 * The drain grace an instance can afford: at most DRAIN_GRACE_MS and at most 40 % of its close
 * deadline, so that handing back, releasing and leaving still fit in `closeTimeoutMs`.
 */
export function drainGraceMs(closeTimeoutMs: number): number {
  return Math.min(DRAIN_GRACE_MS, Math.floor(closeTimeoutMs * 0.4))
}
/** Completed and cancelled jobs (and so their dedupe keys) are kept this long. */
export const KEEP_FINISHED_MS = 24 * 60 * 60_000
/** How often finished jobs past the retention are swept. */
export const SWEEP_EVERY_MS = 60_000

export const DEFAULTS = {
  concurrency: 5,
  timeoutMs: 5 * 60_000,
  retries: 3,
  backoff: { delayMs: 1000, factor: 2, maxDelayMs: 60 * 60_000, jitter: 0.2 },
  cronRetries: 0,
} as const

const NAME = /^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$/

/** Names of jobs, cron schedules and singletons: 1-128 of A-Z a-z 0-9 . _ : @ / -, not starting with a symbol. */
export function checkName(code: ErrorCode, name: unknown, what: string): asserts name is string {
  if (typeof name !== 'string' || !NAME.test(name)) {
    const why = typeof name !== 'string' || name.length === 0 ? 'must be a non-empty string' : 'use 1-128 of A-Z a-z 0-9 . _ : @ / - (starting with a letter or digit)'
    throw new ChorusError(code, [JSON.stringify(name) ?? String(name), why], { details: { what } })
  }
}

/** The payload as JSON text, or a typed error (too large, or not representable as JSON). */
export function encodePayload(payload: unknown): string {
  let text: string | undefined
  try {
    text = payload === undefined ? 'null' : JSON.stringify(payload)
  } catch (err) {
    throw new ChorusError('CHORUS_ERR_JOB_PAYLOAD_INVALID', [(err as Error).message], { cause: err })
  }
  if (text === undefined) throw new ChorusError('CHORUS_ERR_JOB_PAYLOAD_INVALID', [`a ${typeof payload} has no JSON form`])
  // PostgreSQL's jsonb cannot hold NUL characters.
  if (text.includes('\\u0000')) throw new ChorusError('CHORUS_ERR_JOB_PAYLOAD_INVALID', ['it contains a NUL character'])
  const bytes = Buffer.byteLength(text)
  if (bytes > MAX_PAYLOAD_BYTES) {
    throw new ChorusError('CHORUS_ERR_JOB_PAYLOAD_TOO_LARGE', [bytes, MAX_PAYLOAD_BYTES], { details: { bytes, limit: MAX_PAYLOAD_BYTES } })
  }
  return text
}

function invalid(option: string, why: string): never {
  throw new ChorusError('CHORUS_ERR_JOB_OPTIONS_INVALID', [option, why], { details: { option } })
}

export interface CheckedEnqueue {
  /** Epoch milliseconds, or -1 when `delayMs` applies. */
  atMs: number
  delayMs: number
  /** '' for none. */
  key: string
  priority: number
}

export function checkEnqueueOptions(opts: EnqueueOptions | undefined): CheckedEnqueue {
  if (opts === undefined) return { atMs: -1, delayMs: 0, key: '', priority: 0 }
  if (opts === null || typeof opts !== 'object') invalid('options', 'must be an object')
  const { runAt, delayMs, key, priority } = opts
  if (runAt !== undefined && delayMs !== undefined) invalid('runAt', 'give runAt or delayMs, not both')
  let atMs = -1
  if (runAt !== undefined) {
    if (!(runAt instanceof Date) || Number.isNaN(runAt.getTime())) invalid('runAt', 'must be a valid Date')
    atMs = Math.max(0, runAt.getTime())
  }
  if (delayMs !== undefined) {
    if (typeof delayMs !== 'number' || !Number.isFinite(delayMs)) invalid('delayMs', 'must be a finite number')
    if (delayMs < 0) {
      throw new ChorusError('CHORUS_ERR_JOB_DELAY_INVALID', [delayMs], { details: { option: 'delayMs' } })
    }
  }
  if (key !== undefined && (typeof key !== 'string' || key.length === 0 || key.length > MAX_KEY_CHARS || key.includes('\u0000'))) {
    invalid('key', `must be a non-empty string of at most ${MAX_KEY_CHARS} characters without NUL`)
  }
  if (priority !== undefined && (!Number.isInteger(priority) || Math.abs(priority) > 1_000_000)) {
    invalid('priority', 'must be an integer between -1000000 and 1000000')
  }
  return { atMs, delayMs: delayMs ?? 0, key: key ?? '', priority: priority ?? 0 }
}

export interface CheckedDefine {
  concurrency: number
  timeoutMs: number
  retries: number
  backoff: BackoffFunction
  roles: readonly string[]
  transactional: boolean
}

export function checkDefineOptions(opts: DefineOptions | undefined, defaults: { retries: number } = DEFAULTS): CheckedDefine {
  const o = opts ?? {}
  if (o === null || typeof o !== 'object') invalid('options', 'must be an object')
  const posInt = (name: string, v: unknown, max: number): number => {
    if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > max) invalid(name, `must be an integer from 1 to ${max}`)
    return v as number
  }
  const concurrency = o.concurrency === undefined ? DEFAULTS.concurrency : posInt('concurrency', o.concurrency, 1000)
  const timeoutMs = o.timeoutMs === undefined ? DEFAULTS.timeoutMs : posInt('timeoutMs', o.timeoutMs, 2 ** 31 - 1)
  let retries = defaults.retries
  if (o.retries !== undefined) {
    if (!Number.isInteger(o.retries) || o.retries < 0 || o.retries > 1000) invalid('retries', 'must be an integer from 0 to 1000')
    retries = o.retries
  }
  const roles = checkRoles(o.roles, 'CHORUS_ERR_JOB_OPTIONS_INVALID')
  if (o.transactional !== undefined && typeof o.transactional !== 'boolean') invalid('transactional', 'must be a boolean')
  return { concurrency, timeoutMs, retries, backoff: toBackoff(o.backoff), roles, transactional: o.transactional ?? false }
}

export function checkRoles(roles: unknown, code: ErrorCode): readonly string[] {
  if (roles === undefined) return []
  if (!Array.isArray(roles) || roles.some((r) => typeof r !== 'string' || r.length === 0)) {
    throw new ChorusError(code, ['roles', 'must be an array of non-empty strings'], { details: { option: 'roles' } })
  }
  return Object.freeze([...(roles as string[])])
}

function toBackoff(b: BackoffOptions | BackoffFunction | undefined): BackoffFunction {
  if (typeof b === 'function') return b
  if (b !== undefined && (b === null || typeof b !== 'object')) invalid('backoff', 'must be an object or a function')
  const d = { ...DEFAULTS.backoff, ...(b ?? {}) }
  for (const [k, v] of Object.entries(d)) {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) invalid(`backoff.${k}`, 'must be a finite number ≥ 0')
  }
  if (d.jitter > 1) invalid('backoff.jitter', 'must be at most 1')
  return (attempt) => {
    const base = Math.min(d.maxDelayMs, d.delayMs * d.factor ** Math.max(0, attempt - 1))
    return Math.max(0, Math.round(base * (1 + d.jitter * (2 * Math.random() - 1))))
  }
}

/** A bounded text for `last_error`: message, code, and the start of the stack. */
export function errorText(err: Error): string {
  const code = (err as { code?: unknown }).code
  const head = `${err.name}${typeof code === 'string' ? ` [${code}]` : ''}: ${err.message}`
  const stack = err.stack ? `\n${err.stack.split('\n').slice(1, 12).join('\n')}` : ''
  return (head + stack).slice(0, MAX_ERROR_CHARS)
}
