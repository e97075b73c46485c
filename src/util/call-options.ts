/**
 * Per-call option objects whose bad input has an error code of its own area
 * (`CHORUS_ERR_LOCK_OPTIONS_INVALID`, …): the same strict-schema check and the same words as
 * `parseOptions` (parse-options.ts, which answers `CHORUS_ERR_OPTIONS_INVALID`), handed to the
 * caller's `fail(option, why)` to build its own typed error.
 */
import type { z } from 'zod'
import type { ChorusError } from '../errors.js'
import { explainIssue, safeParse } from './parse-options.js'

/** Parses `input` with `schema`, or throws `fail(option, why)` for the first problem found. */
export function parseCallOptions<S extends z.ZodType>(schema: S, input: unknown, fail: (option: string, why: string) => ChorusError): z.output<S> {
  const parsed = safeParse(schema, input)
  if (parsed.success) return parsed.data
  const [option, why] = explainIssue(parsed.error.issues[0]!, input)
  throw fail(option, why)
}
