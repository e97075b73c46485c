/**
 * Validates a public options object against its zod schema and answers a bad one with
 * `CHORUS_ERR_OPTIONS_INVALID` naming the option (`limits.maxSubscriptions`, `timeoutMs`, …), so every
 * subsystem refuses bad options in the same words. Schemas are strict (`z.strictObject`): an unknown
 * key is refused as "is not a known option"; the schema's own messages say what else is wrong.
 */
import type { z } from 'zod'
import { ChorusError } from '../errors.js'

export function parseOptions<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  const parsed = schema.safeParse(input)
  if (parsed.success) return parsed.data
  const issue = parsed.error.issues[0]!
  const unknownKey = issue.code === 'unrecognized_keys'
  const option = [...issue.path, ...(unknownKey ? [issue.keys[0]!] : [])].map(String).join('.') || 'options'
  throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', [option, unknownKey ? 'is not a known option' : issue.message], { details: { option } })
}
