import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { Cluster } from '../../src/cluster.js'
import { eventually, member } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { Proc, type Line } from '../helpers/proc.js'

const worker = new URL('../fixtures/state-worker.mjs', import.meta.url).pathname
const consumer = new URL('../fixtures/topic-consumer.mjs', import.meta.url).pathname

describe('shared state across real processes', () => {
  let db: TestDatabase
  let env: Record<string, string>
  const procs: Proc[] = []
  const spawn = (script: string, id: string, extra: Record<string, string> = {}) => {
    const p = new Proc(script, [], { ...env, CHORUS_INSTANCE_ID: id, ...extra })
    procs.push(p)
    return p
  }

  beforeAll(async () => {
    db = await testDatabase()
    env = { DATABASE_URL: db.url, CHORUS_SECRET: 'state-test-secret-0123456789', CHORUS_PRESET: 'local' }
  })
  afterEach(async () => {
    await Promise.all(procs.splice(0).map((p) => p.stop()))
  })
  afterAll(async () => {
    await db.drop()
  })

  it('counts exactly 3,000 after 3 processes × 1,000 increments of one key', async () => {
    const workers = ['w1', 'w2', 'w3'].map((id) => spawn(worker, id))
    await Promise.all(workers.map((p) => p.waitFor((l) => l.type === 'ready', 30_000, 'ready')))
    for (const p of workers) p.send({ cmd: 'increment', key: 'hits', count: 1000 })
    await Promise.all(workers.map((p) => p.waitFor((l) => l.type === 'incremented', 60_000, 'the increments')))
    const [row] = await db.sql<{ value: string; version: string }[]>`select value, version from map_entries where map = 'race' and key = 'hits'`
    expect(row!.value).toBe('3000')
    expect(Number(row!.version)).toBe(3000)
  })

  it('gives compareAndSet exactly one winner per version across processes', async () => {
    await db.sql`insert into map_entries (map, key, value) values ('race', 'cas', '0')`
    const workers = ['c1', 'c2', 'c3'].map((id) => spawn(worker, id))
    await Promise.all(workers.map((p) => p.waitFor((l) => l.type === 'ready', 30_000, 'ready')))
    for (const p of workers) p.send({ cmd: 'cas', key: 'cas', wins: 100 })
    const done = await Promise.all(workers.map((p) => p.waitFor((l) => l.type === 'cas-done', 60_000, 'the compare-and-set loop')))
    const won = done.flatMap((l) => l.won as number[])
    const attempts = done.reduce((n, l) => n + (l.attempts as number), 0)
    console.log(`compareAndSet: 300 wins out of ${attempts} attempts across 3 processes`)
    // Every version from 1 to 300 was replaced by exactly one winner, and no write was lost.
    expect([...won].sort((x, y) => x - y)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1))
    expect(attempts).toBeGreaterThan(300)
    const [row] = await db.sql<{ value: string; version: string }[]>`select value, version from map_entries where map = 'race' and key = 'cas'`
    expect(row!.value).toBe('300')
    expect(Number(row!.version)).toBe(301)
  })

  describe('a reliable-topic group consumer killed with kill -9', () => {
    let publisher: Cluster
    beforeAll(async () => {
      publisher = await member(db.url, 'publisher')
    })
    afterAll(async () => {
      await publisher?.close()
    })

    it('resumes from its committed offset after a restart: nothing lost, duplicates only after the commit', async () => {
      const total = 2000
      const batch = 20
      const topic = publisher.reliableTopic<number>('stream')
      const extra = { FIXTURE_TOPIC: 'stream', FIXTURE_GROUP: 'g', FIXTURE_BATCH: String(batch) }
      // A backlog, so the consumer reads full batches; then more while it consumes. Kill it mid-stream,
      // while its handler is in the middle of offset 710.
      let published = 0
      while (published < total / 2) await topic.publish(++published)
      const first = spawn(consumer, 'consumer-1', { ...extra, FIXTURE_STALL_AT: '710' })
      await first.waitFor((l) => l.type === 'ready', 30_000, 'the first consumer')
      const publishing = (async () => {
        while (published < total) await topic.publish(++published)
      })()
      await first.waitFor((l) => l.type === 'msg' && l.offset === 710, 60_000, 'offset 710 at the first consumer')
      first.kill('SIGKILL')
      await first.exited
      const before = first.lines.filter((l) => l.type === 'msg').map((l) => l.offset as number)
      const committed = Number((await db.sql<{ committed: string }[]>`select committed from reliable_topic_groups where topic = 'stream' and grp = 'g'`)[0]!.committed)

      const second = spawn(consumer, 'consumer-2', extra)
      await second.waitFor((l) => l.type === 'msg' && l.offset === total, 60_000, `offset ${total} at the second consumer`)
      await publishing
      const after = second.lines.filter((l) => l.type === 'msg').map((l) => l.offset as number)
      const values = second.lines.filter((l): l is Line & { value: number } => l.type === 'msg').map((l) => l.value)
      console.log(`killed with ${before.length} messages delivered (committed ${committed}); the restart began at ${after[0]}: ${before.length - committed} delivered again`)

      // Each process handled its messages in order, without repeats.
      expect(before).toEqual(Array.from({ length: before.length }, (_, i) => i + 1))
      expect(after).toEqual(Array.from({ length: total - committed }, (_, i) => committed + 1 + i))
      expect(values).toEqual(after)
      // Nothing lost: together they handled every offset.
      expect(new Set([...before, ...after]).size).toBe(total)
      // The at-least-once rule: only messages handled after the last commit are handled again, and
      // a group commits after every batch, so at most one batch of them.
      const again = before.filter((o) => o > committed)
      expect(after.filter((o) => before.includes(o))).toEqual(again)
      expect(again.length).toBeLessThanOrEqual(batch)
      expect(again).toContain(710)
      expect(committed).toBeGreaterThan(0)
      await eventually(async () => (await topic.committed('g')) === total, 'the final commit')
    })
  })
})
