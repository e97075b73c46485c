/**
 * Shared map: durable key-value entries in PostgreSQL. Every write bumps the entry's version, so
 * `compareAndSet` has exactly one winner per version; `increment` is one atomic statement; entries
 * with a TTL disappear on read once expired (database time) and are deleted by `sweepExpired`.
 * Changes are announced on the bus for `watch` (at-most-once, like every bus message).
 */
import type { Bus } from '../bus/bus.js'
import { channels } from '../bus/channels.js'
import type { Sql } from '../db/connect.js'
import { schemaName, type SchemaName } from '../db/schema.js'
import { ChorusError } from '../errors.js'
import { parseOptions } from '../util/parse-options.js'
import { checkKey, encodeChecked, json, type Codec } from './codec.js'
import {
  mapEntriesOptions, mapOptions, mapWriteOptions, type MapEntriesOptions, type MapOptions, type MapWriteOptions,
} from './options.js'

export type { MapOptions } from './options.js'

export interface Entry<T> {
  readonly key: string
  readonly value: T
  readonly version: number
}

export interface MapChange {
  readonly key: string
  readonly op: 'set' | 'delete'
  /** The entry's version after a set. */
  readonly version?: number
}

export class SharedMap<T = unknown> {
  readonly name: string
  readonly #sql: Sql
  readonly #s: SchemaName
  readonly #bus: Bus
  readonly #codec: Codec<T>
  readonly #limit: number
  readonly #channel: string

  /** `deps.schema`: the Chorus schema (default `chorus`). */
  constructor(name: string, opts: MapOptions<T>, deps: { sql: Sql; bus: Bus; schema?: string }) {
    this.name = name
    this.#sql = deps.sql
    this.#s = schemaName(deps.sql, deps.schema ?? 'chorus')
    this.#bus = deps.bus
    const o = parseOptions(mapOptions, opts)
    this.#codec = (o.codec as Codec<T> | undefined) ?? (json as Codec<T>)
    this.#limit = o.maxValueBytes ?? 256 * 1024
    this.#channel = channels.map(name)
  }

  async get(key: string): Promise<T | undefined> {
    return (await this.getEntry(key))?.value
  }

  async getEntry(key: string): Promise<Entry<T> | undefined> {
    checkKey(key)
    const [row] = await this.#sql<{ value: string; version: string }[]>`
      select value, version from ${this.#s}.map_entries
      where map = ${this.name} and key = ${key} and (expires_at is null or expires_at > now())`
    return row ? { key, value: this.#codec.decode(row.value), version: Number(row.version) } : undefined
  }

  /** Writes the value (optionally expiring after `ttlMs`) and returns its new version. */
  async set(key: string, value: T, opts: MapWriteOptions = {}): Promise<number> {
    checkKey(key)
    const text = encodeChecked(this.#codec, value, this.#limit)
    const ttl = parseOptions(mapWriteOptions, opts).ttlMs ?? null
    const [row] = await this.#sql<{ version: string }[]>`
      insert into ${this.#s}.map_entries as e (map, key, value, expires_at)
      values (${this.name}, ${key}, ${text}, case when ${ttl}::int is null then null else now() + ${ttl}::int * interval '1 millisecond' end)
      on conflict (map, key) do update set
        value = excluded.value, expires_at = excluded.expires_at, updated_at = now(),
        version = case when e.expires_at is not null and e.expires_at <= now() then 1 else e.version + 1 end
      returning version`
    const version = Number(row!.version)
    this.#announce({ key, op: 'set', version })
    return version
  }

  /** Deletes the key; resolves true when it existed. */
  async delete(key: string): Promise<boolean> {
    checkKey(key)
    const rows = await this.#sql`
      delete from ${this.#s}.map_entries where map = ${this.name} and key = ${key}
      returning (expires_at is null or expires_at > now()) as live`
    const existed = rows.length > 0 && (rows[0] as { live: boolean }).live
    if (rows.length > 0) this.#announce({ key, op: 'delete' })
    return existed
  }

  /**
   * Writes `value` only if the entry is at `expectedVersion` (`null`: only if absent). Returns the
   * new version, or `null` when another write got there first.
   */
  async compareAndSet(key: string, expectedVersion: number | null, value: T, opts: MapWriteOptions = {}): Promise<number | null> {
    checkKey(key)
    if (expectedVersion !== null && (!Number.isSafeInteger(expectedVersion) || expectedVersion < 1)) {
      throw new ChorusError('CHORUS_ERR_STATE_KEY_INVALID', [`version ${String(expectedVersion)}`, 'a version is a positive integer'])
    }
    const text = encodeChecked(this.#codec, value, this.#limit)
    const ttl = parseOptions(mapWriteOptions, opts).ttlMs ?? null
    const expires = this.#sql`case when ${ttl}::int is null then null else now() + ${ttl}::int * interval '1 millisecond' end`
    const rows =
      expectedVersion === null
        ? await this.#sql<{ version: string }[]>`
            insert into ${this.#s}.map_entries as e (map, key, value, expires_at) values (${this.name}, ${key}, ${text}, ${expires})
            on conflict (map, key) do update set value = excluded.value, expires_at = excluded.expires_at, updated_at = now(), version = 1
            where e.expires_at is not null and e.expires_at <= now()
            returning version`
        : await this.#sql<{ version: string }[]>`
            update ${this.#s}.map_entries set value = ${text}, version = version + 1, updated_at = now(), expires_at = ${expires}
            where map = ${this.name} and key = ${key} and version = ${expectedVersion}
              and (expires_at is null or expires_at > now())
            returning version`
    if (rows.length === 0) return null
    const version = Number(rows[0]!.version)
    this.#announce({ key, op: 'set', version })
    return version
  }

  /** Atomically adds `by` to a numeric entry (absent or expired counts as 0) and returns the result. */
  async increment(key: string, by = 1): Promise<number> {
    checkKey(key)
    if (typeof by !== 'number' || !Number.isFinite(by)) throw new ChorusError('CHORUS_ERR_STATE_NOT_A_NUMBER', [this.name, key, String(by)])
    try {
      const [row] = await this.#sql<{ value: string; version: string }[]>`
        insert into ${this.#s}.map_entries as e (map, key, value) values (${this.name}, ${key}, ${String(by)})
        on conflict (map, key) do update set
          value = (case when e.expires_at is not null and e.expires_at <= now() then 0 else e.value::numeric end + ${by}::numeric)::text,
          expires_at = case when e.expires_at is not null and e.expires_at <= now() then null else e.expires_at end,
          version = e.version + 1, updated_at = now()
        returning value, version`
      this.#announce({ key, op: 'set', version: Number(row!.version) })
      return Number(row!.value)
    } catch (err) {
      if ((err as { code?: string }).code === '22P02') throw new ChorusError('CHORUS_ERR_STATE_NOT_A_NUMBER', [this.name, key, 'the stored value'], { cause: err })
      throw err
    }
  }

  /** Live entries, ordered by key, optionally under a key prefix. At most `limit` (default 1,000, max 10,000). */
  async entries(opts: MapEntriesOptions = {}): Promise<Entry<T>[]> {
    const o = parseOptions(mapEntriesOptions, opts)
    const limit = o.limit ?? 1000
    const prefix = o.prefix ?? ''
    if (prefix) checkKey(prefix)
    const pattern = prefix.replace(/[\\%_]/g, (c) => '\\' + c) + '%'
    const rows = await this.#sql<{ key: string; value: string; version: string }[]>`
      select key, value, version from ${this.#s}.map_entries
      where map = ${this.name} and key like ${pattern} and (expires_at is null or expires_at > now())
      order by key limit ${limit}`
    return rows.map((r) => ({ key: r.key, value: this.#codec.decode(r.value), version: Number(r.version) }))
  }

  /** Calls `fn` for changes made by any instance (at-most-once: a lost bus message means a missed change). */
  watch(fn: (change: MapChange) => void): () => void {
    return this.#bus.subscribe(this.#channel, (data) => {
      try {
        fn(JSON.parse(data) as MapChange)
      } catch {
        /* a watcher's failure is its own */
      }
    })
  }

  /** At-most-once, like every bus message: a lost notice means a watcher misses a change. */
  #announce(change: MapChange): void {
    this.#bus.notify(this.#channel, JSON.stringify(change))
  }
}

/** Deletes expired entries of every map; returns how many. Run cluster-wide by one instance at a time. */
export async function sweepExpired(sql: Sql, schema = 'chorus', batch = 5000): Promise<number> {
  const s = schemaName(sql, schema)
  const rows = await sql`
    delete from ${s}.map_entries where ctid in (
      select ctid from ${s}.map_entries where expires_at is not null and expires_at <= now() limit ${batch})
    returning 1`
  return rows.length
}
