/**
 * Typed configuration: a document is accepted only when every view that validates it does — the
 * writer's own zod schema on its own view (with its environment overrides), and the JSON Schema
 * every other app registered for its view. The refusal names the first offending key and lists all
 * problems, so `chorus config push` can say what to fix.
 */
import { z } from 'zod'
import { ChorusError } from '../errors.js'
import { merge, nest, type Layer } from './keys.js'
import { viewLabel, viewSources, type Doc, type View } from './sources.js'
import { mergeSources, type Registered } from './store.js'

export type Schema = z.ZodType

export interface ViewCheck {
  readonly view: View
  readonly schema: Schema
  /** This instance's environment overrides, applied above the runtime layer. */
  readonly env?: Layer
}

export interface Issue {
  readonly key: string
  readonly message: string
  readonly view: string
}

/** The JSON Schema registered for a zod schema (null when zod cannot express it). */
export function toJsonSchema(schema: Schema): unknown {
  try {
    return z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' })
  } catch {
    return null
  }
}

const fromJson = new Map<string, Schema | null>()

function compiled(jsonSchema: unknown): Schema | null {
  const text = JSON.stringify(jsonSchema)
  if (!fromJson.has(text)) {
    let schema: Schema | null = null
    try {
      schema = z.fromJSONSchema(jsonSchema as Parameters<typeof z.fromJSONSchema>[0]) as Schema
    } catch {
      schema = null
    }
    if (fromJson.size > 100) fromJson.clear()
    fromJson.set(text, schema)
  }
  return fromJson.get(text)!
}

/** The effective flat layer of `view` in `doc` (environment overrides on top). */
export function effective(doc: Doc, view: View, env: Layer = {}): Layer {
  return merge([mergeSources(doc, viewSources(view)), env])
}

/** Parses the nested effective configuration with `schema`; issues name dotted keys. */
export function check(schema: Schema, layer: Layer, view: View): { ok: true; value: unknown } | { ok: false; issues: Issue[] } {
  const result = schema.safeParse(nest(layer))
  if (result.success) return { ok: true, value: result.data }
  return { ok: false, issues: result.error.issues.map((i) => ({ key: i.path.map(String).join('.') || '(root)', message: i.message, view: viewLabel(view) })) }
}

export function refusal(issues: readonly Issue[]): ChorusError {
  const first = issues[0]!
  return new ChorusError('CHORUS_ERR_CONFIG_INVALID', [first.key, `${first.message.replace(/^./, (c) => c.toLowerCase())} (for ${first.view})`], {
    details: { key: first.key, issues: issues.map((i) => `${i.key}: ${i.message} (for ${i.view})`) },
  })
}

/** Throws `CHORUS_ERR_CONFIG_INVALID` unless `own` and every registered view accept `doc`. */
export function validate(doc: Doc, own: ViewCheck | null, registered: readonly Registered[]): void {
  const issues: Issue[] = []
  const ownKey = own ? `${own.view.app ?? ''}|${own.view.profiles.join(',')}` : null
  if (own) {
    const r = check(own.schema, effective(doc, own.view, own.env), own.view)
    if (!r.ok) issues.push(...r.issues)
  }
  for (const reg of registered) {
    if (reg.jsonSchema === null || `${reg.view.app ?? ''}|${reg.view.profiles.join(',')}` === ownKey) continue
    const schema = compiled(reg.jsonSchema)
    if (!schema) continue
    const r = check(schema, effective(doc, reg.view), reg.view)
    if (!r.ok) issues.push(...r.issues)
  }
  if (issues.length > 0) throw refusal(issues)
}
