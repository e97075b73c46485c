/**
 * Validates a public options object against its zod schema and answers a bad one with
 * `CHORUS_ERR_OPTIONS_INVALID` naming the option (`limits.maxSubscriptions`, `bus.url`, …), so every
 * subsystem refuses bad options in the same words. Schemas are strict (`z.strictObject`): an unknown
 * key is refused as "is not a known option"; a wrong type says what was expected and what came; the
 * schema's own messages say what else is wrong.
 */
import type { z } from 'zod'
import { ChorusError } from '../errors.js'

export function parseOptions<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  const parsed = schema.safeParse(input)
  if (parsed.success) return parsed.data
  throw optionError(parsed.error.issues[0]!, input)
}

/** `CHORUS_ERR_OPTIONS_INVALID` for the first problem zod found in `input`. */
export function optionError(issue: z.core.$ZodIssue, input: unknown): ChorusError {
  const [option, message] = explainIssue(issue, input)
  return new ChorusError('CHORUS_ERR_OPTIONS_INVALID', [option, message], { details: { option } })
}

/** The option an issue is about (its full path, `options` for the object itself) and what is wrong with it. */
export function explainIssue(issue: z.core.$ZodIssue, input: unknown): [option: string, message: string] {
  let path = issue.path.map(String)
  let message = issue.message
  if (issue.code === 'unrecognized_keys') {
    path = [...path, issue.keys[0]!]
    message = 'is not a known option'
  } else if (issue.code === 'invalid_type' && !issue.message.startsWith('Invalid input')) {
    // The schema's own words ('must be a function') win over the generic ones below.
  } else if (issue.code === 'invalid_type' && issue.expected === 'object') {
    message = 'must be an object'
  } else if (issue.code === 'invalid_type') {
    message = `must be ${issue.expected === 'custom' ? 'of the documented kind' : `a ${issue.expected}`}, got ${describe(at(input, path))}`
  }
  return [path.join('.') || 'options', message]
}

function at(value: unknown, path: readonly string[]): unknown {
  let v = value
  for (const key of path) v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[key] : undefined
  return v
}

function describe(v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'an array'
  return typeof v === 'string' ? `"${v.length > 40 ? `${v.slice(0, 40)}…` : v}"` : typeof v
}
