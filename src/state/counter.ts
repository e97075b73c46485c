/**
 * Hot counters (`cluster.counter(name)`): exact totals for many writers on one key, without the
 * single row lock that `map.increment` takes per increment.
 *
 * - **Sharded**: each instance adds into its own row per key (shard = its instance id); `get` sums
 *   the shards. Writers on different instances never wait for each other.
 * - **Batched like a group commit**: increments made while a flush is in flight are summed per key
 *   and written by the next flush, as one statement for every key (so at most one statement in
 *   flight per counter per instance). An idle counter flushes at once: no timer adds latency.
 * - **Exact and acknowledged**: `add` resolves once the statement that contains it has committed,
 *   and rejects if that statement failed — then none of its batch was counted. As for any single
 *   statement, a connection lost after the commit but before the answer reports a failure for an
 *   increment that did count.
 * - **Bounded**: at most `maxPending` increments wait for a flush; past that `add` is refused with
 *   CHORUS_ERR_STATE_QUEUE_FULL and counts nothing.
 */
import { z } from 'zod'
import type { Sql } from '../db/connect.js'
import { schemaName, type SchemaName } from '../db/schema.js'
import { ChorusError } from '../errors.js'
import { defer, type Deferred } from '../util/deferred.js'
import { parseOptions } from '../util/parse-options.js'
import { liveMembers } from '../membership/live.js'
import { checkKey } from './codec.js'

const counterOptions = z.strictObject({
  /** Increments waiting for a flush before `add` refuses. Default: 100 000. */
  maxPending: z.number().int().min(1).max(10_000_000).optional(),
})

export type CounterOptions = z.input<typeof counterOptions>

export interface CounterDeps {
  readonly sql: Sql
  readonly schema: string
  /** This instance's shard. */
  readonly shard: string
}

interface Batch {
  readonly sums: Map<string, bigint>
  readonly done: Deferred<void>
  size: number
}

export class Counter {
  readonly name: string
  readonly #deps: CounterDeps
  readonly #s: SchemaName
  readonly #maxPending: number
  #pending: Batch | null = null
  #flushing: Promise<void> | null = null
  #closed = false

  constructor(name: string, opts: CounterOptions, deps: CounterDeps) {
    const parsed = parseOptions(counterOptions, opts)
    this.name = name
    this.#deps = deps
    this.#s = schemaName(deps.sql, deps.schema)
    this.#maxPending = parsed.maxPending ?? 100_000
  }

  /** Adds `by` (a safe integer, default 1) to `key`; resolves once it is committed. */
  add(key: string, by = 1): Promise<void> {
    try {
      checkKey(key)
      if (!Number.isSafeInteger(by)) throw new ChorusError('CHORUS_ERR_STATE_COUNT_INVALID', [this.name, key, String(by)])
      if (this.#closed) throw new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', ['closed', `counter "${this.name}".add`])
      const batch = (this.#pending ??= { sums: new Map(), done: defer(), size: 0 })
      if (batch.size >= this.#maxPending) throw new ChorusError('CHORUS_ERR_STATE_QUEUE_FULL', [`counter "${this.name}"`, this.#maxPending])
      batch.sums.set(key, (batch.sums.get(key) ?? 0n) + BigInt(by))
      batch.size++
      if (!this.#flushing) this.#flushing = this.#flush()
      return batch.done.promise
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /** The committed total of `key` over every instance (0 when never counted). */
  async get(key: string): Promise<number> {
    checkKey(key)
    const [row] = await this.#deps.sql<{ total: string | null }[]>`
      select sum(value)::text as total from ${this.#s}.counter_shards where counter = ${this.name} and key = ${key}`
    return Number(row?.total ?? 0)
  }

  /** Removes `key` on every shard. Increments of `key` still in flight may land after it. */
  async delete(key: string): Promise<void> {
    checkKey(key)
    await this.#deps.sql`delete from ${this.#s}.counter_shards where counter = ${this.name} and key = ${key}`
  }

  /** Waits for every increment made so far to be written (or to fail). */
  async flush(): Promise<void> {
    while (this.#flushing) await this.#flushing
  }

  /** Refuses new increments and writes the pending ones. */
  async close(): Promise<void> {
    this.#closed = true
    await this.flush()
  }

  async #flush(): Promise<void> {
    while (this.#pending) {
      const batch = this.#pending
      this.#pending = null
      const keys = [...batch.sums.keys()]
      const values = keys.map((k) => batch.sums.get(k)!.toString())
      try {
        await this.#deps.sql`
          insert into ${this.#s}.counter_shards as c (counter, key, shard, value)
          select ${this.name}, k, ${this.#deps.shard}, v from unnest(${keys}::text[], ${values}::bigint[]) as t(k, v)
          on conflict (counter, key, shard) do update set value = c.value + excluded.value, updated_at = now()`
        batch.done.resolve()
      } catch (err) {
        batch.done.reject(err)
      }
    }
    this.#flushing = null
  }
}

/**
 * Folds the shards of instances that are no longer live into the shard '' of their key, in one
 * statement: the sums never change, and rows do not pile up as instance ids come and go. Run by the
 * minute sweep. An instance declared down that still flushes recreates its own row; nothing is lost.
 */
export async function foldCounterShards(sql: Sql, schema: string): Promise<number> {
  const s = schemaName(sql, schema)
  const [row] = await sql<{ n: number }[]>`
    with dead as (
      delete from ${s}.counter_shards c
      where c.shard <> '' and not exists (select 1 from ${liveMembers(sql, s)} lm where lm.instance_id = c.shard)
      returning counter, key, value
    ), folded as (
      insert into ${s}.counter_shards as c (counter, key, shard, value)
      select counter, key, '', sum(value)::bigint from dead group by counter, key
      on conflict (counter, key, shard) do update set value = c.value + excluded.value, updated_at = now()
      returning 1
    )
    select (select count(*) from dead)::int as n`
  return row?.n ?? 0
}
