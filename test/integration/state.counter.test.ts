// Hot counters: many writers on one key across instances give an exact total; increments are
// acknowledged only once committed; bad input and a full queue are refused and count nothing;
// the shards of a departed instance fold into one row without changing the sum.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Cluster } from '../../src/cluster.js'
import { isChorusError } from '../../src/errors.js'
import { foldCounterShards } from '../../src/state/counter.js'
import { member } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

describe('cluster.counter', () => {
  let db: TestDatabase
  let a: Cluster
  let b: Cluster
  beforeAll(async () => {
    db = await testDatabase()
    a = await member(db.url, 'count-a')
    b = await member(db.url, 'count-b')
  })
  afterAll(async () => {
    await a?.close()
    await b?.close()
    await db?.drop()
  })

  it('counts 4,000 concurrent increments from two instances on one key exactly', async () => {
    const ca = a.counter('answers')
    const cb = b.counter('answers')
    await Promise.all(Array.from({ length: 2000 }, () => [ca.add('quiz:1'), cb.add('quiz:1', 1)]).flat())
    expect(await ca.get('quiz:1')).toBe(4000)
    expect(await cb.get('quiz:1')).toBe(4000)
    // Batched: far fewer rows than increments — one per instance.
    const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from chorus.counter_shards where counter = 'answers' and key = 'quiz:1'`
    expect(row!.n).toBe(2)
  })

  it('keeps keys apart and answers 0 for a key never counted', async () => {
    const c = a.counter('votes')
    await Promise.all([c.add('x', 3), c.add('y', -1), c.add('x', 2)])
    expect(await c.get('x')).toBe(5)
    expect(await c.get('y')).toBe(-1)
    expect(await c.get('never')).toBe(0)
  })

  it('refuses a count that is not a safe integer and a full queue, counting nothing for them', async () => {
    const c = a.counter('strict', { maxPending: 1 })
    for (const by of [1.5, Number.NaN, 2 ** 60, '1' as unknown as number]) {
      const err = await c.add('k', by).catch((e: unknown) => e)
      expect(isChorusError(err, 'CHORUS_ERR_STATE_COUNT_INVALID')).toBe(true)
    }
    const first = c.add('k') // flushes at once
    const second = c.add('k') // waits for the next flush: the queue holds one
    const third = await c.add('k').catch((e: unknown) => e)
    expect(isChorusError(third, 'CHORUS_ERR_STATE_QUEUE_FULL')).toBe(true)
    await Promise.all([first, second])
    expect(await c.get('k')).toBe(2)
    expect(() => a.counter('bad name!')).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_STATE_NAME_INVALID' }))
    expect(() => a.counter('opts', { maxPendin: 3 } as never)).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_OPTIONS_INVALID' }))
  })

  it('folds the shard of an instance that left into one row, keeping the sum', async () => {
    const c = b.counter('folded')
    await Promise.all(Array.from({ length: 50 }, () => c.add('k')))
    await a.counter('folded').add('k', 7)
    await b.close()
    const moved = await foldCounterShards(db.sql as never, 'chorus')
    expect(moved).toBeGreaterThanOrEqual(1)
    const rows = await db.sql<{ shard: string; value: string }[]>`select shard, value::text from chorus.counter_shards where counter = 'folded' order by shard`
    expect(rows.map((r) => [r.shard, Number(r.value)])).toEqual([['', 50], ['count-a', 7]])
    expect(await a.counter('folded').get('k')).toBe(57)
  })
})
