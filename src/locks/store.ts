/**
 * The lock tables, spoken to through the functions of migration 003: one round trip per attempt,
 * per release, per give-up. Everything that must be atomic (key locks, reaping dead leases, the
 * conflict check, the token, the waiter queue) happens inside those functions.
 */
import { randomBytes } from 'node:crypto'
import type { Sql } from '../db/connect.js'
import type { Resource, Space } from './paths.js'

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
  return (randomBytes(8).readBigUInt64BE() >> 1n).toString()
}

export class LockStore {
  readonly #sql: Sql

  constructor(sql: Sql) {
    this.#sql = sql
  }

  async attempt(a: AttemptInput): Promise<AttemptResult> {
    const r = a.resource
    const [row] = await this.#sql<AttemptRow[]>`
      select * from lock_acquire(${r.space}::smallint, ${r.keys as string[]}::text[], ${a.mode}::text, ${a.leaseId}::bigint,
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

  /** Deletes the lease; `wake` when someone waits on one of its keys. */
  async release(r: Resource, leaseId: string): Promise<{ released: boolean; wake: boolean }> {
    const [row] = await this.#sql<{ released: boolean; wake: boolean }[]>`
      select * from lock_release(${r.space}::smallint, ${r.keys as string[]}::text[], ${leaseId}::bigint)`
    return row!
  }

  /** Removes a waiter that gave up; `true` when others still wait on these keys. */
  async unwait(r: Resource, waiter: string): Promise<boolean> {
    const [row] = await this.#sql<{ wake: boolean }[]>`
      select lock_unwait(${r.space}::smallint, ${r.keys as string[]}::text[], ${waiter}::bigint) as wake`
    return row!.wake
  }

  /** Removes every lease and waiter of `holder` at `epoch` or earlier; returns the targets freed. */
  async reap(holder: string, epoch: number): Promise<{ space: Space; name: string }[]> {
    return this.#sql<{ space: Space; name: string }[]>`
      with w as (
        delete from lock_waiters where holder = ${holder} and epoch <= ${epoch}
      ), gone as (
        delete from lock_leases where holder = ${holder} and epoch <= ${epoch} returning space, name, mode
      )
      select space, name from gone where mode in ('S', 'X')`
  }
}
