import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Cluster } from '../../src/index.js'
import { jobStatus } from '../../src/jobs/status.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { eventually, member, record } from '../helpers/cluster.js'

describe('running jobs', () => {
  let db: TestDatabase
  let a: Cluster
  let b: Cluster
  beforeAll(async () => {
    db = await testDatabase()
    a = await member(db.url, 'a', { roles: ['scheduling'] })
    b = await member(db.url, 'b')
    await db.sql`create table chorus_test_effects (job text, n int)`
  })
  afterAll(async () => {
    await a?.close()
    await b?.close()
    await db?.drop()
  })

  const state = async (c: Cluster, id: string) => (await c.jobs.get(id))?.state

  it('retries a failing job with its backoff, then completes it', async () => {
    const attempts: number[] = []
    const delays: number[] = []
    const failed = record(a, 'job:failed')
    a.jobs.define(
      'flaky',
      (_p, ctx) => {
        attempts.push(ctx.attempt)
        if (ctx.attempt < 3) throw new Error(`boom ${ctx.attempt}`)
      },
      {
        retries: 3,
        backoff: (attempt) => {
          delays.push(attempt)
          return 20 * attempt
        },
      },
    )
    const id = await b.jobs.enqueue('flaky', {})
    await eventually(async () => (await state(a, id)) === 'completed', 'completion after retries')
    expect(attempts).toEqual([1, 2, 3])
    expect(delays).toEqual([1, 2])
    expect(failed.filter((f) => f.id === id).map((f) => [f.attempt, f.retryInMs, f.error])).toEqual([
      [1, 20, 'boom 1'],
      [2, 40, 'boom 2'],
    ])
    expect((await a.jobs.get(id))!.attempts).toBe(3)
  })

  it('keeps a job that ran out of attempts as failed, with its last error, and retries it on request', async () => {
    let fail = true
    let runs = 0
    a.jobs.define(
      'doomed',
      () => {
        runs++
        if (fail) throw new Error('still broken')
      },
      { retries: 1, backoff: { delayMs: 10, jitter: 0 } },
    )
    const id = await a.jobs.enqueue('doomed', {})
    await eventually(async () => (await state(a, id)) === 'failed', 'failed state')
    const job = await a.jobs.get(id)
    expect(job!.attempts).toBe(2)
    expect(job!.lastError).toContain('still broken')
    expect(runs).toBe(2)
    expect(await a.jobs.retry(id)).toBe(true)
    fail = false
    await eventually(async () => (await state(a, id)) === 'completed', 'completion after retry()')
    expect(runs).toBe(3)
    expect(await a.jobs.retry(id)).toBe(false)
  })

  it('cancels a queued job before it runs, and aborts a running one', async () => {
    let ran = false
    a.jobs.define('never', () => void (ran = true))
    const queued = await a.jobs.enqueue('never', {}, { delayMs: 300 })
    expect(await a.jobs.cancel(queued)).toBe(true)
    expect(await a.jobs.cancel(queued)).toBe(false)

    let reason: unknown = null
    let started = false
    a.jobs.define('long', async (_p, ctx) => {
      started = true
      await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve(), { once: true }))
      reason = ctx.signal.reason
    })
    const running = await a.jobs.enqueue('long', {})
    await eventually(() => started, 'the long job to start')
    expect(await b.jobs.cancel(running)).toBe(true)
    await eventually(() => reason !== null, 'the abort')
    expect(reason).toMatchObject({ code: 'CHORUS_ERR_JOB_CANCELLED' })
    expect(await state(a, running)).toBe('cancelled')
    await new Promise((r) => setTimeout(r, 400))
    expect(ran).toBe(false)
    expect(await state(a, queued)).toBe('cancelled')
  })

  it('aborts the signal of a handler that runs past its timeout and fails the attempt', async () => {
    let reason: unknown = null
    a.jobs.define(
      'slow',
      async (_p, ctx) => {
        await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve(), { once: true }))
        reason = ctx.signal.reason
        throw ctx.signal.reason
      },
      { timeoutMs: 150, retries: 0 },
    )
    const id = await a.jobs.enqueue('slow', {})
    await eventually(async () => (await state(a, id)) === 'failed', 'failure by timeout')
    expect(reason).toMatchObject({ code: 'CHORUS_ERR_JOB_TIMEOUT' })
    expect((await a.jobs.get(id))!.lastError).toContain('CHORUS_ERR_JOB_TIMEOUT')
  })

  it('runs jobs restricted to a role only on instances with that role', async () => {
    const ranOn: string[] = []
    for (const c of [a, b]) c.jobs.define('report', () => void ranOn.push(c.instanceId), { roles: ['scheduling'], concurrency: 2 })
    const ids = await b.jobs.enqueueMany(Array.from({ length: 20 }, (_, i) => ({ name: 'report', payload: i })))
    await eventually(() => ranOn.length === 20, 'all 20')
    expect(new Set(ranOn)).toEqual(new Set(['a']))
    expect(ids).toHaveLength(20)
  })

  it('commits a transactional handler’s writes with the completion, and rolls them back with a failure', async () => {
    a.jobs.define(
      'pay',
      async (p: { n: number }, ctx) => {
        await ctx.sql`insert into chorus.chorus_test_effects (job, n) values (${ctx.job.id}, ${ctx.attempt})`
        if (ctx.attempt === 1) throw new Error('fails after writing')
        return p
      },
      { transactional: true, retries: 2, backoff: { delayMs: 10, jitter: 0 } },
    )
    const id = await b.jobs.enqueue('pay', { n: 1 })
    await eventually(async () => (await state(a, id)) === 'completed', 'completion')
    const rows = await db.sql`select n from chorus_test_effects where job = ${id}`
    expect(rows.map((r) => r.n)).toEqual([2])
  })

  it('refuses a transactional handler’s statements once its timeout aborted it: nothing lands outside the transaction', async () => {
    const late: unknown[] = []
    let done!: () => void
    const finished = new Promise<void>((r) => (done = r))
    a.jobs.define(
      'slowpay',
      async (_p, ctx) => {
        await new Promise((r) => setTimeout(r, 600)) // ignores its signal, as a careless handler does
        try {
          await ctx.sql`insert into chorus.chorus_test_effects (job, n) values (${ctx.job.id}, 99)`
        } catch (err) {
          late.push(err)
        }
        done()
      },
      { transactional: true, timeoutMs: 200, retries: 0 },
    )
    const id = await b.jobs.enqueue('slowpay', {})
    await finished
    expect(late).toHaveLength(1)
    expect((late[0] as { code?: string }).code).toBe('CHORUS_ERR_JOB_TIMEOUT')
    await new Promise((r) => setTimeout(r, 200))
    expect(await db.sql`select n from chorus_test_effects where job = ${id}`).toHaveLength(0)
  })

  it('reports counts by name and state, for the status command', async () => {
    const s = await jobStatus(db.sql as never)
    const flaky = s.jobs.find((j) => j.name === 'flaky')
    expect(flaky).toMatchObject({ completed: 1, queued: 0, running: 0, failed: 0 })
    expect(s.jobs.find((j) => j.name === 'never')).toMatchObject({ cancelled: 1 })
  })

  it('hands running jobs back on drain, and another instance runs them', async () => {
    const c = await member(db.url, 'c')
    const started: string[] = []
    let release: () => void = () => undefined
    const gate = new Promise<void>((r) => (release = r))
    c.jobs.define('handoff', async (_p, ctx) => {
      started.push('c')
      await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve(), { once: true }))
    })
    const id = await c.jobs.enqueue('handoff', {})
    await eventually(() => started.length === 1, 'c to start it')
    b.jobs.define('handoff', async () => {
      started.push('b')
      await gate
    })
    const closing = c.close()
    await eventually(() => started.includes('b'), 'b to take the job over', 20_000)
    release()
    await closing
    await eventually(async () => (await state(b, id)) === 'completed', 'completion on b')
    // The hand-back did not count as an attempt.
    expect((await b.jobs.get(id))!.attempts).toBe(1)
  })
})
