/**
 * Per-call option objects whose bad input has an error code of its own area
 * (`CHORUS_ERR_LOCK_OPTIONS_INVALID`, …): the same strict-schema check and the same words as
 * `parseOptions` (parse-options.ts, which answers `CHORUS_ERR_OPTIONS_INVALID`), handed to the
 * caller's `fail(option, why)` to build its own typed error.
 */
import type { z } from 'zod'
import type { ChorusError } from '../errors.js'
import { explainIssue } from './parse-options.js'

/** Each schema's result for no options at all, the usual call: parsed once, frozen, shared. */
const noOptions = new WeakMap<z.ZodType, unknown>()

/** Parses `input` with `schema`, or throws `fail(option, why)` for the first problem found. */
export function parseCallOptions<S extends z.ZodType>(schema: S, input: unknown, fail: (option: string, why: string) => ChorusError): z.output<S> {
  const none = isEmpty(input)
  if (none && noOptions.has(schema)) return noOptions.get(schema) as z.output<S>
  const parsed = schema.safeParse(input)
  if (none && parsed.success) noOptions.set(schema, Object.freeze(parsed.data))
  if (parsed.success) return parsed.data
  const [option, why] = explainIssue(parsed.error.issues[0]!, input)
  throw fail(option, why)
}

/** `undefined` or `{}` (a plain object with no own keys). */
function isEmpty(input: unknown): boolean {
  if (input === undefined) return true
  if (typeof input !== 'object' || input === null || Object.getPrototypeOf(input) !== Object.prototype) return false
  for (const _ in input) return false
  return Object.getOwnPropertySymbols(input).length === 0
}
