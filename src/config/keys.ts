/**
 * Configuration keys and layers: a key is a dotted path (`quiz.maxPlayers`); a layer is a flat
 * object of keys to leaves (scalars or arrays, never objects). Owns flattening files into layers,
 * merging layers by precedence (a higher layer's key hides the lower ones' ancestors and
 * descendants, so the nested view is always well formed), the nested view, the environment
 * mapping and masking. Glob patterns for secret keys are matched here by hand: two wildcards do not
 * justify a dependency.
 */
import { ChorusError } from '../errors.js'

export type Leaf = string | number | boolean | null | readonly unknown[]
export type Layer = Record<string, Leaf>

export const MASK = '••••••'
export const MAX_KEY_LENGTH = 200
const KEY = /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$/

export function checkKey(key: unknown): asserts key is string {
  if (typeof key !== 'string' || key.length === 0 || key.length > MAX_KEY_LENGTH || !KEY.test(key)) {
    throw new ChorusError('CHORUS_ERR_CONFIG_KEY_INVALID', [JSON.stringify(key), `use 1-${MAX_KEY_LENGTH} characters, segments of A-Z a-z 0-9 _ - joined by dots`], {
      details: { key },
    })
  }
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** `{a: {b: 1}}` → `{'a.b': 1}`; arrays and scalars are leaves. Refuses keys and values that are not configuration. */
export function flatten(doc: unknown, where: string): Layer {
  if (!isPlainObject(doc)) throw new ChorusError('CHORUS_ERR_CONFIG_SOURCE_INVALID', [where, 'its top level must be a mapping of keys'])
  const out: Layer = {}
  const walk = (obj: Record<string, unknown>, prefix: string) => {
    for (const [k, v] of Object.entries(obj)) {
      const key = prefix ? `${prefix}.${k}` : k
      if (isPlainObject(v)) walk(v, key)
      else {
        checkKey(key)
        out[key] = leaf(v, key, where)
      }
    }
  }
  walk(doc, '')
  return out
}

/** A leaf as JSON gives it back: dates become ISO strings, `undefined` and functions are refused. */
export function leaf(v: unknown, key: string, where: string): Leaf {
  if (v instanceof Date) return v.toISOString()
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return v
  if (typeof v === 'number' && Number.isFinite(v)) return v
  if (Array.isArray(v)) {
    try {
      return JSON.parse(JSON.stringify(v)) as unknown[]
    } catch (err) {
      throw new ChorusError('CHORUS_ERR_CONFIG_INVALID', [key, `is not JSON (${where})`], { details: { key, issues: [`${key}: not JSON`] }, cause: err })
    }
  }
  throw new ChorusError('CHORUS_ERR_CONFIG_INVALID', [key, `holds ${typeof v === 'number' ? String(v) : typeof v}, which is not a configuration value (${where})`], {
    details: { key, issues: [`${key}: not a configuration value`] },
  })
}

function related(a: string, b: string): boolean {
  return a === b || a.startsWith(b + '.') || b.startsWith(a + '.')
}

/** Layers merged lowest first; each key of a higher layer replaces the key, its ancestors and its descendants below. */
export function merge(layers: readonly Layer[]): Layer {
  const out: Layer = {}
  for (const layer of layers) {
    for (const [key, value] of Object.entries(layer)) {
      for (const existing of Object.keys(out)) if (related(existing, key)) delete out[existing]
      out[key] = value
    }
  }
  return out
}

/** `{'a.b': 1}` → `{a: {b: 1}}` (a merged layer never holds both a key and its descendant). */
export function nest(layer: Layer): Record<string, unknown> {
  const root: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(layer)) {
    const parts = key.split('.')
    let node = root
    for (const p of parts.slice(0, -1)) {
      if (!isPlainObject(node[p])) node[p] = {}
      node = node[p] as Record<string, unknown>
    }
    node[parts.at(-1)!] = value
  }
  return root
}

/** The value at a dotted path of a nested object: a leaf, a subtree, or undefined. */
export function at(root: unknown, key: string): unknown {
  let node = root
  for (const p of key.split('.')) {
    if (!isPlainObject(node) || !Object.hasOwn(node, p)) return undefined
    node = node[p]
  }
  return node
}

/** Keys whose values differ between two layers (added, removed or changed), sorted. */
export function changedKeys(before: Layer, after: Layer): string[] {
  const keys = new Set([...Object.keys(before), ...Object.keys(after)])
  return [...keys].filter((k) => JSON.stringify(before[k]) !== JSON.stringify(after[k])).sort()
}

/** The environment variable that overrides `key` on one instance: `quiz.max-players` → `CHORUS_CONFIG_QUIZ_MAX_PLAYERS`. */
export function envName(key: string): string {
  return 'CHORUS_CONFIG_' + key.toUpperCase().replace(/[.-]/g, '_')
}

/**
 * This instance's overrides: for every known key whose `envName` is set, the variable's value — as
 * JSON when it parses and the key does not already hold a string, else the text as it is.
 */
export function envLayer(known: Layer, candidates: Iterable<string>, env: NodeJS.ProcessEnv): Layer {
  const out: Layer = {}
  const keys = new Set([...Object.keys(known), ...candidates])
  for (const key of keys) {
    const raw = env[envName(key)]
    if (raw === undefined) continue
    if (typeof known[key] === 'string') {
      out[key] = raw
      continue
    }
    try {
      const parsed: unknown = JSON.parse(raw)
      out[key] = isPlainObject(parsed) ? raw : (parsed as Leaf)
    } catch {
      out[key] = raw
    }
  }
  return out
}

/** Dotted paths of every leaf a JSON Schema of objects names (the keys an environment variable may override before any value is stored). */
export function schemaKeys(schema: unknown, prefix = ''): string[] {
  if (!isPlainObject(schema) || !isPlainObject(schema.properties)) return prefix ? [prefix] : []
  return Object.entries(schema.properties).flatMap(([k, sub]) => schemaKeys(sub, prefix ? `${prefix}.${k}` : k))
}

/** `*` matches one key segment, `**` any number of them (`*.password`, `db.**`). */
export function secretMatcher(patterns: readonly string[]): (key: string) => boolean {
  if (patterns.length === 0) return () => false
  const res = patterns.map((p) => {
    const body = p
      .split('.')
      .map((seg) => (seg === '**' ? '.*' : seg.split('*').map((s) => s.replace(/[\\^$+?.()|[\]{}-]/g, '\\$&')).join('[^.]*')))
      .join('\\.')
    return new RegExp(`^${body}$`)
  })
  return (key) => res.some((re) => re.test(key))
}

export function checkPattern(p: unknown): p is string {
  return typeof p === 'string' && /^(?:\*\*|[A-Za-z0-9_*-]+)(?:\.(?:\*\*|[A-Za-z0-9_*-]+))*$/.test(p)
}

/** A copy of `layer` with the values of `secret` keys replaced by the mask. */
export function masked(layer: Layer, secret: (key: string) => boolean): Layer {
  const out: Layer = {}
  for (const [k, v] of Object.entries(layer)) out[k] = secret(k) ? MASK : v
  return out
}
