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
  const parsed = safeParse(schema, input)
  if (parsed.success) return parsed.data
  throw optionError(parsed.error.issues[0]!, input)
}

/** Each schema's result for no options at all (the usual per-call case): parsed once, frozen, shared. */
const noOptions = new WeakMap<z.ZodType, { success: true; data: unknown }>()

/** `schema.safeParse(input)`, where no options (`undefined` or `{}`) cost a lookup after the first time. */
export function safeParse<S extends z.ZodType>(schema: S, input: unknown): z.ZodSafeParseResult<z.output<S>> {
  const none = isEmpty(input)
  const known = none ? noOptions.get(schema) : undefined
  if (known) return known as z.ZodSafeParseResult<z.output<S>>
  const parsed = schema.safeParse(input)
  if (none && parsed.success) noOptions.set(schema, Object.freeze({ success: true as const, data: Object.freeze(parsed.data) }))
  return parsed
}

/** `undefined`, or a plain object with no own keys. */
function isEmpty(input: unknown): boolean {
  if (input === undefined) return true
  if (typeof input !== 'object' || input === null || Object.getPrototypeOf(input) !== Object.prototype) return false
  for (const _ in input) return false
  return Object.getOwnPropertySymbols(input).length === 0
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
