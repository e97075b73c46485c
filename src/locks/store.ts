/**
 * The lock tables, spoken to through the functions of migration 003: one round trip per attempt,
 * per release, per give-up. Everything that must be atomic (key locks, reaping dead leases, the
 * conflict check, the token, the waiter queue) happens inside those functions. Plain names have a
 * fast path first: one UPDATE of the name's state row that succeeds only when its counts show the
 * name free and nobody queued, and otherwise leaves the decision to the function.
 */
import { randomChunk } from '../random.js'
import type { Sql } from '../db/connect.js'
import { schemaName, type SchemaName } from '../db/schema.js'
import { isLive } from '../membership/live.js'
import { NAME_SPACE, type Resource, type Space } from './paths.js'

/** The real mode on the target key; ancestors get the matching intention (IS, IX). */
export type KeyMode = 'S' | 'X'

export type AttemptResult =
  | { status: 'granted'; token: bigint; freed: string[] }
  | { status: 'blocked'; waiter: string | null; retryMs: number | null; freed: string[] }
  | { status: 'not-member'; waiter: string | null }

export interface AttemptInput {
  resource: Resource
  mode: KeyMode
  leaseId: string
  holder: string
  epoch: number
  ttlMs: number | null
  /** Queue as a waiter when blocked (refreshing the waiter row when `waiter` is given). */
  wait: boolean
  waiter: string | null
  waiterTtlMs: number
}

interface AttemptRow {
  status: 'granted' | 'blocked' | 'not-member'
  token: string | null
  waiter: string | null
  retry_ms: string | null
  freed: string[] | null
}

/** A random positive 63-bit id, made here so a lease can be released even when its grant's answer was lost. */
export function newLeaseId(): string {
  return (randomChunk(8).readBigUInt64BE(0) >> 1n).toString()
}

export class LockStore {
  readonly #sql: Sql
  readonly #s: SchemaName

  constructor(sql: Sql, schema: string) {
    this.#sql = sql
    this.#s = schemaName(sql, schema)
  }

  async attempt(a: AttemptInput): Promise<AttemptResult> {
    const r = a.resource
    if (r.space === NAME_SPACE && a.waiter === null) {
      const token = await this.#fastAcquire(a)
      if (token !== null) return { status: 'granted', token, freed: [] }
    }
    const [row] = await this.#sql<AttemptRow[]>`
      select * from ${this.#s}.lock_acquire(${r.space}::smallint, ${r.keys as string[]}::text[], ${a.mode}::text, ${a.leaseId}::bigint,
        ${a.holder}::text, ${a.epoch}::bigint, ${a.ttlMs}::bigint, ${a.wait}::boolean, ${a.waiter}::bigint, ${a.waiterTtlMs}::int)`
    const freed = row!.freed ?? []
    switch (row!.status) {
      case 'granted':
        return { status: 'granted', token: BigInt(row!.token!), freed }
      case 'blocked':
        return { status: 'blocked', waiter: row!.waiter, retryMs: row!.retry_ms === null ? null : Number(row!.retry_ms), freed }
      case 'not-member':
        return { status: 'not-member', waiter: row!.waiter }
      default: {
        const never: never = row!.status
        throw new Error(`unexpected lock_acquire status ${String(never)}`)
      }
    }
  }

  /**
   * A plain name that is free with nobody queued, taken in one statement. The conditions are on the
   * state row itself, so they are re-checked on its newest version if another transaction held it.
   */
  async #fastAcquire(a: AttemptInput): Promise<bigint | null> {
    const x = a.mode === 'X' ? 1 : 0
    const [row] = await this.#sql<{ token: string }[]>`
      with s as (
        update ${this.#s}.lock_state s set last_token = s.last_token + 1, n_x = s.n_x + ${x}::int, n_s = s.n_s + (1 - ${x}::int)
        where s.space = 0 and s.name = ${a.resource.target}
          and s.n_x = 0 and s.w_x = 0 and (${x}::int = 0 or (s.n_s = 0 and s.w_s = 0))
          and s.last_token < s.reserved
          and ${isLive(this.#sql, this.#s, a.holder, a.epoch)}
        returning s.last_token
      ), l as (
        insert into ${this.#s}.lock_leases (space, name, lease_id, mode, holder, epoch, token, expires_at)
        select 0, ${a.resource.target}, ${a.leaseId}::bigint, ${a.mode}::text, ${a.holder}, ${a.epoch}::bigint, s.last_token,
               now() + ${a.ttlMs}::bigint * interval '1 millisecond'
        from s
      )
      select last_token as token from s`
    return row ? BigInt(row.token) : null
  }

  /** Deletes the lease; `wake` when someone waits on one of its keys. */
  async release(r: Resource, leaseId: string): Promise<{ released: boolean; wake: boolean }> {
    if (r.space === NAME_SPACE) {
      // Counts go down only by what this statement deleted; a reaped lease leaves them high, which
      // sends the next acquirer to lock_acquire, where they are counted again.
      const [row] = await this.#sql<{ released: boolean; wake: boolean }[]>`
        with d as (
          delete from ${this.#s}.lock_leases where space = 0 and name = ${r.target} and lease_id = ${leaseId}::bigint returning mode
        ), u as (
          update ${this.#s}.lock_state s set
            n_x = s.n_x - (select count(*) from d where mode = 'X'),
            n_s = s.n_s - (select count(*) from d where mode = 'S')
          where s.space = 0 and s.name = ${r.target} and exists (select 1 from d)
          returning s.w_s + s.w_x > 0 as wake
        )
        select exists (select 1 from d) as released, coalesce((select wake from u), false) as wake`
      return row!
    }
    const [row] = await this.#sql<{ released: boolean; wake: boolean }[]>`
      select * from ${this.#s}.lock_release(${r.space}::smallint, ${r.keys as string[]}::text[], ${leaseId}::bigint)`
    return row!
  }

  /** Removes a waiter that gave up; `true` when others still wait on these keys. */
  async unwait(r: Resource, waiter: string): Promise<boolean> {
    const [row] = await this.#sql<{ wake: boolean }[]>`
      select ${this.#s}.lock_unwait(${r.space}::smallint, ${r.keys as string[]}::text[], ${waiter}::bigint) as wake`
    return row!.wake
  }

  /** Removes every lease and waiter of `holder` at `epoch` or earlier; returns the targets freed. */
  async reap(holder: string, epoch: number): Promise<{ space: Space; name: string }[]> {
    return this.#sql<{ space: Space; name: string }[]>`
      with w as (
        delete from ${this.#s}.lock_waiters where holder = ${holder} and epoch <= ${epoch}
      ), gone as (
        delete from ${this.#s}.lock_leases where holder = ${holder} and epoch <= ${epoch} returning space, name, mode
      )
      select space, name from gone where mode in ('S', 'X')`
  }
}
