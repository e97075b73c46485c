/**
 * How a session object becomes a row and back, and what a writer changed. A loaded session carries
 * a hidden field (`__chorus`: the version it was read at and a short hash per key); on write, the
 * keys whose hash differs (or that are new) are the ones this writer changed, and the hashed keys
 * that are gone are the ones it removed. Those, and only those, are merged onto a row that another
 * instance wrote in the meantime.
 */
import { createHash } from 'node:crypto'
import { ChorusError } from '../errors.js'

/** The hidden field a loaded session carries; it round-trips through the framework untouched. */
export const META_KEY = '__chorus'

export interface SessionMeta {
  /** The row's version when this session was loaded. */
  readonly v: number
  /** Per key, a short hash of its JSON when loaded. */
  readonly h: Readonly<Record<string, string>>
}

/** A session's keys (cookie and hidden field excluded) and each value's JSON text. */
export type Values = Map<string, string>

export function hashOf(text: string): string {
  return createHash('sha1').update(text).digest('base64url').slice(0, 12)
}

/**
 * Encodes every own enumerable key but `cookie` and the hidden field. A key whose value has no JSON
 * form (a function, `undefined`) is left out, as JSON does; a value JSON cannot encode at all (a
 * BigInt, a cycle) is a typed error.
 */
export function encodeValues(sess: Record<string, unknown>): Values {
  const values: Values = new Map()
  for (const key of Object.keys(sess)) {
    if (key === 'cookie' || key === META_KEY) continue
    let text: string | undefined
    try {
      text = JSON.stringify(sess[key])
    } catch (err) {
      throw new ChorusError('CHORUS_ERR_STATE_VALUE_NOT_SERIALIZABLE', [`session key "${key.slice(0, 50)}": ${(err as Error).message}`], { cause: err, details: { key } })
    }
    if (text !== undefined) values.set(key, text)
  }
  return values
}

/** The JSON object text of `values` (each value already JSON). */
export function joinValues(values: Values): string {
  let out = '{'
  for (const [key, text] of values) out += (out.length > 1 ? ',' : '') + JSON.stringify(key) + ':' + text
  return out + '}'
}

/** Parses a stored row's data into its values and their hashes. */
export function parseData(data: string): { object: Record<string, unknown>; values: Values; hashes: Record<string, string> } {
  const object = JSON.parse(data) as Record<string, unknown>
  const values: Values = new Map()
  const hashes: Record<string, string> = {}
  for (const key of Object.keys(object)) {
    const text = JSON.stringify(object[key])
    if (text === undefined) continue
    values.set(key, text)
    hashes[key] = hashOf(text)
  }
  return { object, values, hashes }
}

/** The hidden field of a session object, when it carries a well-formed one. */
export function metaOf(sess: Record<string, unknown>): SessionMeta | null {
  const m = sess[META_KEY] as Partial<SessionMeta> | undefined
  if (!m || typeof m !== 'object' || !Number.isSafeInteger(m.v) || (m.v as number) < 1 || !m.h || typeof m.h !== 'object') return null
  return m as SessionMeta
}

/** What this writer changed relative to what it loaded: without a hidden field, every key is a change. */
export function changesOf(values: Values, meta: SessionMeta | null): { changed: Values; removed: string[] } {
  if (!meta) return { changed: values, removed: [] }
  const changed: Values = new Map()
  for (const [key, text] of values) if (meta.h[key] !== hashOf(text)) changed.set(key, text)
  const removed = Object.keys(meta.h).filter((key) => !values.has(key))
  return { changed, removed }
}

/** Applies a writer's changes onto the current row's values. */
export function merge(current: Values, changes: { changed: Values; removed: string[] }): Values {
  const out = new Map(current)
  for (const key of changes.removed) out.delete(key)
  for (const [key, text] of changes.changed) out.set(key, text)
  return out
}
