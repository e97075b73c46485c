/**
 * Limits and defaults of jobs, cron and singletons, and the checks of names and payloads (option
 * objects are checked by their schemas in options.ts). Every check throws a typed `ChorusError`
 * before anything is written, so bad input never enqueues or schedules anything.
 */
import { ChorusError, type ErrorCode } from '../errors.js'

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

/** A bounded text for `last_error`: message, code, and the start of the stack. */
export function errorText(err: Error): string {
  const code = (err as { code?: unknown }).code
  const head = `${err.name}${typeof code === 'string' ? ` [${code}]` : ''}: ${err.message}`
  const stack = err.stack ? `\n${err.stack.split('\n').slice(1, 12).join('\n')}` : ''
  return (head + stack).slice(0, MAX_ERROR_CHARS)
}
