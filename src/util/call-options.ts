/**
 * Per-call option objects (`locks.acquire(name, opts)`, `files.write(path, data, opts)`, …): each
 * has one strict zod schema, and this is the one translation of the schema's first complaint into
 * the caller's typed error naming the option. Unknown keys and a non-object are refused by the
 * schema itself; the parsed object is a copy, so a caller changing theirs later changes nothing.
 */
import type { z } from 'zod'
import type { ChorusError } from '../errors.js'

/** Parses `input` with `schema`, or throws `fail(option, why)` for the first problem found. */
export function parseCallOptions<S extends z.ZodType>(schema: S, input: unknown, fail: (option: string, why: string) => ChorusError): z.output<S> {
  const parsed = schema.safeParse(input)
  if (parsed.success) return parsed.data
  const issue = parsed.error.issues[0]!
  const at = issue.path.map(String).join('.')
  if (issue.code === 'unrecognized_keys') throw fail(at ? `${at}.${issue.keys[0]}` : issue.keys[0]!, 'is not a known option')
  if (at === '' && issue.code === 'invalid_type') throw fail('options', 'must be an object')
  throw fail(at || 'options', issue.message)
}
