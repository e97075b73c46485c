/**
 * Where the dashboard keeps its sign-in sessions and API tokens: records only (id, name, times),
 * never a secret — a cookie or token is valid only while its record exists, and its MAC (by the
 * password's key) cannot be forged. In the database (two shared maps, expiring on database time), so
 * a sign-out or a revoked token holds across dashboard restarts and for every dashboard of the
 * cluster; in memory for tests.
 */
import type { Bus } from '../bus/bus.js'
import type { Sql } from '../db/connect.js'
import { SharedMap } from '../state/map.js'

export interface SessionRecord {
  readonly id: string
  /** Milliseconds since the epoch. */
  readonly createdAt: number
  readonly expiresAt: number
}

export interface TokenRecord {
  readonly id: string
  /** What the token is for, as its creator named it (`dashboard` for the one printed at start). */
  readonly name: string
  readonly createdAt: number
  readonly expiresAt: number
}

/** One kind of record, by id. Calls may run concurrently; each is one statement, no ordering between them. */
export interface RecordStore<T extends { id: string; expiresAt: number }> {
  put(r: T): Promise<void>
  /** The record while it lasts: undefined once deleted or expired. */
  get(id: string): Promise<T | undefined>
  delete(id: string): Promise<boolean>
  /** Live records (at most 10,000). */
  list(): Promise<T[]>
}

export interface CredentialStore {
  readonly sessions: RecordStore<SessionRecord>
  readonly tokens: RecordStore<TokenRecord>
}

const SCAN_LIMIT = 10_000

/** Records in the shared maps `chorus.dashboard.sessions` and `chorus.dashboard.tokens`, each expiring with its credential. */
export class DatabaseCredentials implements CredentialStore {
  readonly sessions: RecordStore<SessionRecord>
  readonly tokens: RecordStore<TokenRecord>

  constructor(deps: { sql: Sql; bus: Bus; schema: string }) {
    this.sessions = new MapRecords(new SharedMap<SessionRecord>('chorus.dashboard.sessions', { maxValueBytes: 1024 }, deps))
    this.tokens = new MapRecords(new SharedMap<TokenRecord>('chorus.dashboard.tokens', { maxValueBytes: 1024 }, deps))
  }
}

class MapRecords<T extends { id: string; expiresAt: number }> implements RecordStore<T> {
  readonly #map: SharedMap<T>

  constructor(map: SharedMap<T>) {
    this.#map = map
  }

  async put(r: T): Promise<void> {
    // A map TTL (database time) fits up to ~23 days; longer records carry none and are pruned by `list`.
    const ms = Math.max(1, Math.ceil(r.expiresAt - Date.now()))
    await this.#map.set(r.id, r, ms <= 2_000_000_000 ? { ttlMs: ms } : {})
  }

  get(id: string): Promise<T | undefined> {
    return this.#map.get(id).then(live)
  }

  delete(id: string): Promise<boolean> {
    return this.#map.delete(id)
  }

  async list(): Promise<T[]> {
    const all = (await this.#map.entries({ limit: SCAN_LIMIT })).map((e) => e.value)
    for (const r of all) if (live(r) === undefined) await this.#map.delete(r.id)
    return all.filter((r) => live(r) !== undefined)
  }
}

/** The same in memory: for tests, and a dashboard whose sign-outs need not outlive it. */
export class MemoryCredentials implements CredentialStore {
  readonly sessions: RecordStore<SessionRecord> = new MemoryRecords()
  readonly tokens: RecordStore<TokenRecord> = new MemoryRecords()
}

class MemoryRecords<T extends { id: string; expiresAt: number }> implements RecordStore<T> {
  readonly #records = new Map<string, T>()

  async put(r: T): Promise<void> {
    this.#records.set(r.id, r)
  }

  async get(id: string): Promise<T | undefined> {
    return live(this.#records.get(id))
  }

  async delete(id: string): Promise<boolean> {
    return this.#records.delete(id)
  }

  async list(): Promise<T[]> {
    for (const r of [...this.#records.values()]) if (live(r) === undefined) this.#records.delete(r.id)
    return [...this.#records.values()]
  }
}

function live<T extends { expiresAt: number }>(r: T | undefined): T | undefined {
  return r !== undefined && typeof r.expiresAt === 'number' && r.expiresAt > Date.now() ? r : undefined
}
