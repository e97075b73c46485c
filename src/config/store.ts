/**
 * The configuration's rows: versions (whole, immutable, secrets sealed), the schemas and secret
 * patterns instances registered, and the version each instance runs. A write runs in one
 * transaction under a transaction-level advisory lock (pooler-safe): read the latest version, check
 * the expected version, build the next document, refuse it unless every registered schema accepts
 * it, insert it. So versions are dense, a compare-and-set has one winner, and a refused write
 * stores nothing. Every statement names the schema (see db/schema.ts).
 */
import type postgres from 'postgres'
import type { Sql } from '../db/connect.js'
import { schemaName, type SchemaName } from '../db/schema.js'
import { liveMembers } from '../membership/live.js'
import { ChorusError } from '../errors.js'
import { isSealed, type SecretBox } from './crypto.js'
import { changedKeys, MASK, merge, secretMatcher, type Layer, type Leaf } from './keys.js'
import type { Doc, View } from './sources.js'

export const MAX_VERSION_BYTES = 1024 * 1024

export type StoredValues = Record<string, Record<string, Leaf | { $secret: string }>>

export interface VersionRow {
  readonly version: number
  readonly values: StoredValues
  readonly changed: readonly string[]
  readonly author: string
  readonly source: string
  readonly createdAt: Date
}

export interface HistoryEntry {
  readonly version: number
  readonly changed: readonly string[]
  readonly author: string
  readonly source: string
  readonly createdAt: string
}

export interface Registered {
  readonly view: View
  readonly jsonSchema: unknown
  readonly secretKeys: readonly string[]
}

export interface Running {
  readonly instanceId: string
  readonly view: View
  readonly version: number
  readonly refused: number | null
  readonly appliedAt: string
}

export interface WriteRequest {
  readonly author: string
  readonly source: 'push' | 'set' | 'delete' | 'rollback'
  readonly expectedVersion?: number | undefined
  /** The next document, from the current one (clear). */
  next(current: Doc, version: number): Promise<Doc> | Doc
  /** Throws `CHORUS_ERR_CONFIG_INVALID` when `doc` must not be stored; `registered` are the other views' schemas. */
  validate(doc: Doc, registered: readonly Registered[]): void
  /** Secret patterns of the writer itself (the registered ones are added). */
  readonly secretKeys?: readonly string[]
}

export interface WriteResult {
  readonly version: number
  readonly changed: readonly string[]
  /** False when the document equals the current one (nothing was stored). */
  readonly stored: boolean
}

type Tx = postgres.TransactionSql<Record<string, never>>

export const EMPTY: Doc = { sources: {}, secrets: new Set() }

export function profilesText(profiles: readonly string[]): string {
  return profiles.join(',')
}

function viewOf(app: string, profiles: string): View {
  return { app: app === '' ? null : app, profiles: profiles === '' ? [] : profiles.split(',') }
}

export class ConfigStore {
  readonly #sql: Sql
  readonly #s: SchemaName
  readonly #schema: string
  readonly #box: SecretBox | null

  constructor(opts: { sql: Sql; schema: string; box: SecretBox | null }) {
    this.#sql = opts.sql
    this.#schema = opts.schema
    this.#s = schemaName(opts.sql, opts.schema)
    this.#box = opts.box
  }

  /** The latest version number (0 before the first), one index lookup: the poll's backstop. */
  async latest(): Promise<number> {
    const [row] = await this.#sql<{ v: string | null }[]>`select max(version) as v from ${this.#s}.config_versions`
    return Number(row?.v ?? 0)
  }

  /** A version's row (the latest when `version` is omitted), or null. */
  async read(version?: number, sql: Sql | Tx = this.#sql): Promise<VersionRow | null> {
    const s = this.#s
    const rows =
      version === undefined
        ? await sql<RawRow[]>`select version, "values", changed, author, source, created_at from ${s}.config_versions order by version desc limit 1`
        : await sql<RawRow[]>`select version, "values", changed, author, source, created_at from ${s}.config_versions where version = ${version}`
    return rows[0] ? toRow(rows[0]) : null
  }

  /** Versions `from`…`to` (inclusive), by number: one read for a page of history with its differences. */
  async range(from: number, to: number): Promise<Map<number, VersionRow>> {
    const rows = await this.#sql<RawRow[]>`
      select version, "values", changed, author, source, created_at from ${this.#s}.config_versions
      where version between ${from} and ${to} order by version`
    return new Map(rows.map((r) => [Number(r.version), toRow(r)]))
  }

  async history(limit: number): Promise<HistoryEntry[]> {
    const rows = await this.#sql<RawRow[]>`
      select version, changed, author, source, created_at from ${this.#s}.config_versions order by version desc limit ${limit}`
    return rows.map((r) => ({ version: Number(r.version), changed: r.changed, author: r.author, source: r.source, createdAt: r.created_at.toISOString() }))
  }

  /** The clear document of a stored version; needs the cluster secret when it holds secrets. */
  open(row: VersionRow | null): Doc {
    if (!row) return EMPTY
    const sources: Record<string, Layer> = {}
    const secrets = new Set<string>()
    for (const [name, layer] of Object.entries(row.values)) {
      const out: Layer = {}
      for (const [k, v] of Object.entries(layer)) {
        if (isSealed(v)) {
          secrets.add(k)
          if (!this.#box) throw new ChorusError('CHORUS_ERR_CONFIG_SECRET_MISSING', [k], { details: { key: k } })
          out[k] = this.#box.open(k, v, row.version)
        } else out[k] = v
      }
      sources[name] = out
    }
    return { sources, secrets }
  }

  /** A stored version for display: secret values replaced by the mask, no secret needed. */
  static masked(row: VersionRow | null): Doc {
    if (!row) return EMPTY
    const sources: Record<string, Layer> = {}
    const secrets = new Set<string>()
    for (const [name, layer] of Object.entries(row.values)) {
      sources[name] = Object.fromEntries(
        Object.entries(layer).map(([k, v]) => {
          if (!isSealed(v)) return [k, v]
          secrets.add(k)
          return [k, MASK]
        }),
      )
    }
    return { sources, secrets }
  }

  #seal(doc: Doc): StoredValues {
    const out: StoredValues = {}
    for (const [name, layer] of Object.entries(doc.sources)) {
      out[name] = {}
      for (const [k, v] of Object.entries(layer)) {
        if (!doc.secrets.has(k)) out[name][k] = v
        else if (!this.#box) throw new ChorusError('CHORUS_ERR_CONFIG_SECRET_MISSING', [k], { details: { key: k } })
        else out[name][k] = this.#box.seal(k, v)
      }
    }
    return out
  }

  async write(req: WriteRequest): Promise<WriteResult> {
    return this.#sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(hashtext(${'chorus.config:' + this.#schema}))`
      const row = await this.read(undefined, tx)
      const version = row?.version ?? 0
      if (req.expectedVersion !== undefined && req.expectedVersion !== version) {
        throw new ChorusError('CHORUS_ERR_CONFIG_CONFLICT', [version, req.expectedVersion], { details: { current: version, expected: req.expectedVersion } })
      }
      const current = this.open(row)
      const registered = await this.schemas(tx)
      const proposed = await req.next(current, version)
      // Once secret, always secret: a later write that does not mark the key keeps it sealed.
      const isSecret = secretMatcher([...(req.secretKeys ?? []), ...registered.flatMap((r) => r.secretKeys)])
      const secrets = new Set([...proposed.secrets, ...current.secrets])
      for (const layer of Object.values(proposed.sources)) for (const k of Object.keys(layer)) if (isSecret(k)) secrets.add(k)
      const next: Doc = { sources: dropEmpty(proposed.sources), secrets }
      const changed = docChanges(current, next)
      if (changed.length === 0) return { version, changed, stored: false }
      req.validate(next, registered)
      const values = this.#seal(next)
      const bytes = Buffer.byteLength(JSON.stringify(values))
      if (bytes > MAX_VERSION_BYTES) throw new ChorusError('CHORUS_ERR_CONFIG_TOO_LARGE', [bytes, MAX_VERSION_BYTES], { details: { bytes, limit: MAX_VERSION_BYTES } })
      await tx`
        insert into ${this.#s}.config_versions (version, "values", changed, author, source)
        values (${version + 1}, ${tx.json(values as never)}, ${changed}, ${req.author.slice(0, 200)}, ${req.source})`
      return { version: version + 1, changed, stored: true }
    }) as Promise<WriteResult>
  }

  async registerSchema(view: View, jsonSchema: unknown, secretKeys: readonly string[], instanceId: string): Promise<void> {
    await this.#sql`
      insert into ${this.#s}.config_schemas (app, profiles, json_schema, secret_keys, instance_id, updated_at)
      values (${view.app ?? ''}, ${profilesText(view.profiles)}, ${jsonSchema === null ? null : this.#sql.json(jsonSchema as never)}, ${[...secretKeys]}, ${instanceId}, now())
      on conflict (app, profiles) do update set json_schema = excluded.json_schema, secret_keys = excluded.secret_keys,
        instance_id = excluded.instance_id, updated_at = excluded.updated_at`
  }

  /** Schemas registered within the last 7 days (older ones belong to apps no longer deployed). */
  async schemas(sql: Sql | Tx = this.#sql): Promise<Registered[]> {
    const rows = await sql<{ app: string; profiles: string; json_schema: unknown; secret_keys: string[] }[]>`
      select app, profiles, json_schema, secret_keys from ${this.#s}.config_schemas
      where updated_at > now() - interval '7 days' order by app, profiles`
    return rows.map((r) => ({ view: viewOf(r.app, r.profiles), jsonSchema: r.json_schema, secretKeys: r.secret_keys }))
  }

  async reportRunning(instanceId: string, epoch: number, view: View, version: number, refused: number | null): Promise<void> {
    await this.#sql`
      insert into ${this.#s}.config_instances (instance_id, epoch, app, profiles, version, refused, applied_at)
      values (${instanceId}, ${epoch}, ${view.app ?? ''}, ${profilesText(view.profiles)}, ${version}, ${refused}, now())
      on conflict (instance_id) do update set epoch = excluded.epoch, app = excluded.app, profiles = excluded.profiles,
        version = excluded.version, refused = excluded.refused, applied_at = excluded.applied_at`
  }

  async forget(instanceId: string, epoch: number): Promise<void> {
    await this.#sql`delete from ${this.#s}.config_instances where instance_id = ${instanceId} and epoch = ${epoch}`
  }

  /** The version each live instance runs. */
  async running(): Promise<Running[]> {
    const sql = this.#sql
    const rows = await sql<{ instance_id: string; app: string; profiles: string; version: string; refused: string | null; applied_at: Date }[]>`
      select c.instance_id, c.app, c.profiles, c.version, c.refused, c.applied_at
      from ${this.#s}.config_instances c join ${liveMembers(sql, this.#s)} m on m.instance_id = c.instance_id and m.epoch = c.epoch
      order by c.instance_id`
    return rows.map((r) => ({ instanceId: r.instance_id, view: viewOf(r.app, r.profiles), version: Number(r.version), refused: r.refused === null ? null : Number(r.refused), appliedAt: r.applied_at.toISOString() }))
  }
}

interface RawRow {
  version: string
  values: StoredValues
  changed: string[]
  author: string
  source: string
  created_at: Date
}

function toRow(r: RawRow): VersionRow {
  return { version: Number(r.version), values: r.values, changed: r.changed, author: r.author, source: r.source, createdAt: r.created_at }
}

function dropEmpty(sources: Readonly<Record<string, Layer>>): Record<string, Layer> {
  return Object.fromEntries(Object.entries(sources).filter(([, layer]) => Object.keys(layer).length > 0))
}

/** Keys whose value (or secrecy) differs in any source between two documents. */
export function docChanges(a: Doc, b: Doc): string[] {
  const names = new Set([...Object.keys(a.sources), ...Object.keys(b.sources)])
  const changed = new Set<string>()
  for (const n of names) for (const k of changedKeys(a.sources[n] ?? {}, b.sources[n] ?? {})) changed.add(k)
  for (const k of b.secrets) if (!a.secrets.has(k) && Object.values(b.sources).some((l) => k in l)) changed.add(k)
  return [...changed].sort()
}

/** The merged layer of the sources `names` (lowest first). */
export function mergeSources(doc: Doc, names: readonly string[]): Layer {
  return merge(names.map((n) => doc.sources[n] ?? {}))
}
