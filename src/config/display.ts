/**
 * The configuration as people and other config clients see it: each key of a view with the
 * source it comes from, the differences between two versions, and the Spring Cloud Config
 * "environment" document. Callers pass documents opened with `ConfigStore.masked` (secrets shown
 * as the mask) unless they mean to hand out clear values.
 */
import { MASK, merge, type Layer, type Leaf } from './keys.js'
import { viewSources, type Doc, type View } from './sources.js'

export interface Entry {
  readonly key: string
  readonly value: Leaf
  readonly source: string
  readonly secret: boolean
}

export interface Difference {
  readonly source: string
  readonly key: string
  /** Absent: the key was added. */
  readonly before?: Leaf
  /** Absent: the key was removed. */
  readonly after?: Leaf
}

/** Every key of `view` with its winning source, sorted by key. */
export function entries(doc: Doc, view: View): Entry[] {
  const origin = new Map<string, string>()
  const layers = viewSources(view).map((name) => {
    const layer = doc.sources[name] ?? {}
    for (const k of Object.keys(layer)) origin.set(k, name)
    return layer
  })
  const merged = merge(layers)
  return Object.keys(merged)
    .sort()
    .map((key) => ({ key, value: merged[key]!, source: origin.get(key)!, secret: doc.secrets.has(key) }))
}

/** What changed from `a` to `b`, source by source; secret values compare as changed only when their ciphertext did. */
export function differences(a: Doc, b: Doc): Difference[] {
  const out: Difference[] = []
  const names = [...new Set([...Object.keys(a.sources), ...Object.keys(b.sources)])].sort()
  for (const source of names) {
    const before: Layer = a.sources[source] ?? {}
    const after: Layer = b.sources[source] ?? {}
    for (const key of [...new Set([...Object.keys(before), ...Object.keys(after)])].sort()) {
      const had = Object.hasOwn(before, key)
      const has = Object.hasOwn(after, key)
      if (had && has && JSON.stringify(before[key]) === JSON.stringify(after[key])) continue
      out.push({ source, key, ...(had ? { before: before[key]! } : {}), ...(has ? { after: after[key]! } : {}) })
    }
  }
  return out
}

export function formatDifferences(diffs: readonly Difference[]): string {
  if (diffs.length === 0) return 'no differences'
  const show = (v: Leaf | undefined) => (v === undefined ? '(none)' : v === MASK ? MASK : JSON.stringify(v))
  return diffs.map((d) => `${d.source}  ${d.key}: ${show(d.before)} → ${show(d.after)}`).join('\n')
}

export function formatEntries(list: readonly Entry[]): string {
  if (list.length === 0) return 'no configuration'
  const rows = list.map((e) => [e.key, typeof e.value === 'string' ? e.value : JSON.stringify(e.value), e.source])
  const widths = [0, 1].map((i) => Math.max(...rows.map((r) => r[i]!.length), i === 0 ? 3 : 5))
  return [['KEY', 'VALUE', 'SOURCE'], ...rows].map((r) => `${r[0]!.padEnd(widths[0]!)}  ${r[1]!.padEnd(widths[1]!)}  ${r[2]}`.trimEnd()).join('\n')
}

export interface SpringEnvironment {
  readonly name: string
  readonly profiles: readonly string[]
  readonly label: string | null
  readonly version: string
  readonly state: string | null
  readonly propertySources: readonly { readonly name: string; readonly source: Readonly<Record<string, Leaf>> }[]
}

/**
 * Spring Cloud Config Server's `GET /{application}/{profile}[/{label}]` answer: property sources
 * highest precedence first, arrays flattened to `key[0]` as Spring's own loader does.
 */
export function springEnvironment(doc: Doc, view: View, version: number, label: string | null): SpringEnvironment {
  const names = viewSources(view).reverse()
  const propertySources = names
    .filter((n) => doc.sources[n] && Object.keys(doc.sources[n]!).length > 0)
    .map((n) => ({ name: `chorus:${n}`, source: springFlat(doc.sources[n]!) }))
  return { name: view.app ?? 'application', profiles: view.profiles.length ? view.profiles : ['default'], label, version: String(version), state: null, propertySources }
}

function springFlat(layer: Layer): Record<string, Leaf> {
  const out: Record<string, Leaf> = {}
  const put = (key: string, v: unknown) => {
    if (Array.isArray(v)) v.forEach((item, i) => put(`${key}[${i}]`, item))
    else if (v !== null && typeof v === 'object') for (const [k, inner] of Object.entries(v)) put(`${key}.${k}`, inner)
    else out[key] = v as Leaf
  }
  for (const [k, v] of Object.entries(layer)) put(k, v)
  return out
}
