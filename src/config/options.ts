/**
 * The `config` option of `createCluster`: one strict schema, its defaults and environment
 * fallbacks, resolved once and frozen. Unknown keys are refused by the schema itself.
 */
import { z } from 'zod'
import { optionError } from '../util/parse-options.js'
import { checkPattern } from './keys.js'

const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$/

export const configOptionsSchema = z.strictObject({
  /** A zod schema of the nested configuration; every version is validated with it before it is stored or run. Default: none (any JSON). */
  schema: z.custom<z.ZodType>((v) => typeof (v as { safeParse?: unknown } | null)?.safeParse === 'function', 'must be a zod schema').optional(),
  /** The app this instance runs: its `{app}.yml` and `{app}-{profile}.yml` apply. Default: env `CHORUS_APP`, else none (only `application*.yml`). */
  app: z.string().regex(NAME, 'use 1-100 of A-Z a-z 0-9 _ . -').optional(),
  /** Active profiles, lowest precedence first. Default: env `CHORUS_PROFILES` (comma-separated), else none. */
  profiles: z.array(z.string().regex(NAME, 'use 1-100 of A-Z a-z 0-9 _ . -')).max(16).optional(),
  /** Keys kept secret (encrypted at rest, masked on display): patterns where `*` is one segment, `**` any. Default: none. */
  secretKeys: z.array(z.string().refine(checkPattern, 'use key segments, * (one segment) or ** (any)')).max(100).optional(),
  /** How often the latest version number is read as a backstop for lost notices. Default 2000 ms. */
  pollMs: z.number().int().min(100).max(60_000).optional(),
})

export type ConfigOptions = z.input<typeof configOptionsSchema>

export interface ResolvedConfigOptions {
  readonly schema: z.ZodType | null
  readonly app: string | null
  readonly profiles: readonly string[]
  readonly secretKeys: readonly string[]
  readonly pollMs: number
}

export function resolveConfigOptions(input: ConfigOptions = {}, env: NodeJS.ProcessEnv = process.env): ResolvedConfigOptions {
  const fromEnv = {
    ...(env.CHORUS_APP ? { app: env.CHORUS_APP } : {}),
    ...(env.CHORUS_PROFILES ? { profiles: env.CHORUS_PROFILES.split(',').map((p) => p.trim()).filter(Boolean) } : {}),
  }
  const parsed = configOptionsSchema.safeParse({ ...fromEnv, ...input })
  if (!parsed.success) {
    // Named as an option of createCluster: `config.profiles`, `config.secretKeys.0`.
    const issue = parsed.error.issues[0]!
    throw optionError({ ...issue, path: ['config', ...issue.path] }, { config: { ...fromEnv, ...input } })
  }
  const o = parsed.data
  return Object.freeze({
    schema: o.schema ?? null,
    app: o.app ?? null,
    profiles: Object.freeze([...(o.profiles ?? [])]),
    secretKeys: Object.freeze([...(o.secretKeys ?? [])]),
    pollMs: o.pollMs ?? 2000,
  })
}
