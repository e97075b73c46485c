/**
 * The edits a version can be made of, as pure functions from one clear document to the next; the
 * instance API, the CLI and the dashboard all build versions from these. `push` replaces every file
 * source and keeps the runtime layer; `set` and `remove` touch only the runtime layer.
 */
import { ChorusError } from '../errors.js'
import { checkKey, flatten, isPlainObject, leaf, merge, type Layer } from './keys.js'
import { RUNTIME, type Doc } from './sources.js'

/** The files of a directory (or `parseFiles`) in place of the current ones. */
export function pushed(current: Doc, files: Doc): Doc {
  const runtime = current.sources[RUNTIME]
  return { sources: { ...files.sources, ...(runtime ? { [RUNTIME]: runtime } : {}) }, secrets: new Set(files.secrets) }
}

/** `key` set in the runtime layer (an object value sets each of its leaves under `key`). */
export function withSet(current: Doc, key: string, value: unknown, secret: boolean): Doc {
  checkKey(key)
  if (value === undefined) throw new ChorusError('CHORUS_ERR_CONFIG_INVALID', [key, 'cannot be set to undefined; use delete'], { details: { key, issues: [`${key}: undefined`] } })
  const set: Layer = isPlainObject(value) ? prefixed(key, flatten(value, `the value of ${key}`)) : { [key]: leaf(value, key, 'set') }
  const runtime = merge([current.sources[RUNTIME] ?? {}, set])
  const secrets = new Set(current.secrets)
  if (secret) for (const k of Object.keys(set)) secrets.add(k)
  return { sources: { ...current.sources, [RUNTIME]: runtime }, secrets }
}

/** `key` (and everything under it) removed from the runtime layer: the files' value applies again. */
export function withRemoved(current: Doc, key: string): Doc {
  checkKey(key)
  const runtime = Object.fromEntries(Object.entries(current.sources[RUNTIME] ?? {}).filter(([k]) => k !== key && !k.startsWith(key + '.')))
  return { sources: { ...current.sources, [RUNTIME]: runtime }, secrets: current.secrets }
}

function prefixed(key: string, layer: Layer): Layer {
  return Object.fromEntries(Object.entries(layer).map(([k, v]) => [`${key}.${k}`, v]))
}
