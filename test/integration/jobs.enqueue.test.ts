import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Cluster } from '../../src/index.js'
import { isChorusError } from '../../src/index.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { eventually, member } from '../helpers/cluster.js'

async function rejects(p: Promise<unknown>, code: string): Promise<void> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  )
  expect(isChorusError(err), `expected ${code}, got ${String(err)}`).toBe(true)
  expect((err as { code: string }).code).toBe(code)
}

describe('enqueueing jobs', () => {
  let db: TestDatabase
  let a: Cluster
  let b: Cluster
  beforeAll(async () => {
    db = await testDatabase()
    a = await member(db.url, 'a')
    b = await member(db.url, 'b')
  })
  afterAll(async () => {
    await a?.close()
    await b?.close()
    await db?.drop()
  })

  const count = async (name: string) => Number((await db.sql`select count(*)::int as n from chorus.jobs where name = ${name}`)[0]!.n)

  it('runs an enqueued job once, with its payload and context', async () => {
    const seen: { payload: unknown; id: string; attempt: number; maxAttempts: number; on: string }[] = []
    for (const c of [a, b]) {
      c.jobs.define<{ n: number }>('hello', (payload, ctx) => {
        seen.push({ payload, id: ctx.job.id, attempt: ctx.attempt, maxAttempts: ctx.job.maxAttempts, on: c.instanceId })
      })
    }
    const id = await a.jobs.enqueue('hello', { n: 1 })
    await eventually(async () => (await a.jobs.get(id))?.state === 'completed', 'completion')
    expect(seen).toHaveLength(1)
    expect(seen[0]).toMatchObject({ payload: { n: 1 }, id, attempt: 1, maxAttempts: 4 })
    const job = await b.jobs.get(id)
    expect(job).toMatchObject({ name: 'hello', state: 'completed', attempts: 1, lastError: null })
  })

  it('turns the same key enqueued 100 times concurrently into one job', async () => {
    let runs = 0
    for (const c of [a, b]) c.jobs.define('once', () => void runs++)
    const ids = await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 2 ? a : b).jobs.enqueue('once', { i }, { key: 'user-42' })))
    expect(new Set(ids).size).toBe(1)
    expect(await count('once')).toBe(1)
    await eventually(async () => (await a.jobs.get(ids[0]!))?.state === 'completed', 'completion')
    // Still kept, so the key still dedupes after completion.
    expect(await a.jobs.enqueue('once', {}, { key: 'user-42' })).toBe(ids[0])
    expect(await count('once')).toBe(1)
    expect(runs).toBe(1)
  })

  it('enqueues a batch in one statement, ids in order, keys deduped within and across batches', async () => {
    a.jobs.define('batch', () => undefined)
    const ids = await a.jobs.enqueueMany([
      { name: 'batch', payload: 1 },
      { name: 'batch', payload: 2, key: 'k1' },
      { name: 'batch', payload: 3 },
      { name: 'batch', payload: 4, key: 'k1' },
      { name: 'batch', payload: 5, delayMs: 60_000 },
    ])
    expect(ids).toHaveLength(5)
    expect(ids[1]).toBe(ids[3])
    expect(new Set(ids).size).toBe(4)
    const payloads = await Promise.all(ids.map(async (id) => (await a.jobs.get(id))!.payload))
    expect(payloads).toEqual([1, 2, 3, 2, 5])
    const again = await b.jobs.enqueueMany([{ name: 'batch', payload: 9, key: 'k1' }])
    expect(again).toEqual([ids[1]])
  })

  it('rejects bad input with typed errors and enqueues nothing', async () => {
    const before = Number((await db.sql`select count(*)::int as n from chorus.jobs`)[0]!.n)
    await rejects(a.jobs.enqueue('', {}), 'CHORUS_ERR_JOB_NAME_INVALID')
    await rejects(a.jobs.enqueue('has space', {}), 'CHORUS_ERR_JOB_NAME_INVALID')
    await rejects(a.jobs.enqueue('x'.repeat(129), {}), 'CHORUS_ERR_JOB_NAME_INVALID')
    await rejects(a.jobs.enqueue(42 as unknown as string, {}), 'CHORUS_ERR_JOB_NAME_INVALID')
    await rejects(a.jobs.enqueue('big', 'x'.repeat(256 * 1024)), 'CHORUS_ERR_JOB_PAYLOAD_TOO_LARGE')
    await rejects(a.jobs.enqueue('big', { n: 10n }), 'CHORUS_ERR_JOB_PAYLOAD_INVALID')
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    await rejects(a.jobs.enqueue('big', cyclic), 'CHORUS_ERR_JOB_PAYLOAD_INVALID')
    await rejects(a.jobs.enqueue('big', 'nul\u0000'), 'CHORUS_ERR_JOB_PAYLOAD_INVALID')
    await rejects(a.jobs.enqueue('late', {}, { delayMs: -1 }), 'CHORUS_ERR_JOB_DELAY_INVALID')
    await rejects(a.jobs.enqueue('late', {}, { delayMs: Number.NaN }), 'CHORUS_ERR_JOB_OPTIONS_INVALID')
    await rejects(a.jobs.enqueue('late', {}, { runAt: new Date('nope') }), 'CHORUS_ERR_JOB_OPTIONS_INVALID')
    await rejects(a.jobs.enqueue('late', {}, { runAt: new Date(), delayMs: 5 }), 'CHORUS_ERR_JOB_OPTIONS_INVALID')
    await rejects(a.jobs.enqueue('late', {}, { priority: 1.5 }), 'CHORUS_ERR_JOB_OPTIONS_INVALID')
    await rejects(a.jobs.enqueue('late', {}, { key: '' }), 'CHORUS_ERR_JOB_OPTIONS_INVALID')
    // One bad item spoils the whole batch.
    await rejects(a.jobs.enqueueMany([{ name: 'ok', payload: 1 }, { name: 'ok', payload: 2, delayMs: -5 }]), 'CHORUS_ERR_JOB_DELAY_INVALID')
    await rejects(a.jobs.enqueueMany([{ name: 'ok' }, { name: '' }]), 'CHORUS_ERR_JOB_NAME_INVALID')
    await rejects(a.jobs.enqueueMany(Array.from({ length: 10_001 }, () => ({ name: 'ok' }))), 'CHORUS_ERR_JOB_BATCH_TOO_LARGE')
    await rejects(a.jobs.cancel('not-an-id'), 'CHORUS_ERR_JOB_OPTIONS_INVALID')
    const after = Number((await db.sql`select count(*)::int as n from chorus.jobs`)[0]!.n)
    expect(after).toBe(before)
    expect(() => a.jobs.define('cron:mine', () => undefined)).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_JOB_NAME_INVALID' }))
    expect(() => a.jobs.define('hello', () => undefined)).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_JOB_DUPLICATE' }))
    expect(() => a.jobs.define('neg', () => undefined, { concurrency: 0 })).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_JOB_OPTIONS_INVALID' }))
    expect(() => a.jobs.define('neg', () => undefined, { retries: -1 })).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_JOB_OPTIONS_INVALID' }))
    expect(() => a.jobs.define('neg', 'nope' as never)).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_JOB_OPTIONS_INVALID' }))
  })

  it('runs a delayed job when it is due, not before', async () => {
    let ranAt = 0
    a.jobs.define('later', () => void (ranAt = Date.now()))
    const enqueuedAt = Date.now()
    const id = await b.jobs.enqueue('later', null, { delayMs: 400 })
    expect((await a.jobs.get(id))!.state).toBe('queued')
    await eventually(async () => (await a.jobs.get(id))?.state === 'completed', 'the delayed job')
    expect(ranAt - enqueuedAt).toBeGreaterThanOrEqual(400 - 50)
    console.log(`delayMs 400 → ran after ${ranAt - enqueuedAt} ms`)
  })

  it('runs higher priority first among due jobs', async () => {
    const order: number[] = []
    const ids = await a.jobs.enqueueMany([0, 5, -3, 9, 1].map((p) => ({ name: 'prio', payload: p, priority: p })))
    expect(ids).toHaveLength(5)
    a.jobs.define<number>('prio', (p) => void order.push(p), { concurrency: 1 })
    await eventually(() => order.length === 5, 'all five')
    expect(order).toEqual([9, 5, 1, 0, -3])
  })
})
