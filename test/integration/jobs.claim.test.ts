import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { schemaName, sequenceName } from '../../src/db/schema.js'
import { claimJobs, type ClaimJobs } from '../../src/jobs/sql/claimJobs.js'
import { insertJob } from '../../src/jobs/sql/insertJob.js'
import type { JobsMark } from '../../src/jobs/trace.js'
import { defer } from '../../src/util/deferred.js'
import { eventually, member } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

describe('the claim statement', () => {
  let db: TestDatabase
  // One connection of its own that waits for the WAL flush on commit (the test server does not),
  // so a claim that commits without it shows, and the statements it prepared are only this file's.
  let sql: postgres.Sql
  beforeAll(async () => {
    db = await testDatabase()
    sql = postgres(db.url, { max: 1, onnotice: () => undefined, connection: { synchronous_commit: 'on' } })
  })
  afterAll(async () => {
    await sql?.end()
    await db?.drop()
  })

  const s = () => schemaName(sql, 'chorus')
  const claim = (name: string, n: number, handBackDead = false): ClaimJobs => ({
    names: [name],
    counts: [n],
    instanceId: 'claimer',
    epoch: 1,
    claimSeq: sequenceName('chorus', 'job_claims'),
    handBackDead,
  })
  const enqueue = async (name: string, priority = 0) => (await insertJob(sql, s(), { name, payload: 'null', atMs: -1, delayMs: 0, key: '', priority }))!.id
  /** Claims in a transaction and reads the commit setting the claim left for it. */
  const claimAndSetting = (c: ClaimJobs) =>
    sql.begin(async (tx) => {
      const rows = await claimJobs(tx, s(), c)
      const [row] = await tx<{ setting: string }[]>`select current_setting('synchronous_commit') as setting`
      return { claimed: rows.filter((r) => !r.requeued).length, setting: row!.setting }
    })

  it('commits without waiting for the WAL flush, with and without handing back dead claims', async () => {
    expect((await sql<{ setting: string }[]>`select current_setting('synchronous_commit') as setting`)[0]!.setting).toBe('on')
    for (const handBackDead of [false, true, false]) {
      await enqueue('async')
      expect(await claimAndSetting(claim('async', 1, handBackDead))).toEqual({ claimed: 1, setting: 'off' })
    }
  })

  it('also commits without the flush when it finds nothing to claim', async () => {
    expect(await claimAndSetting(claim('nothing-queued', 5))).toEqual({ claimed: 0, setting: 'off' })
  })

  it('is planned once per connection, not on every claim', async () => {
    for (let i = 0; i < 12; i++) {
      await enqueue('planned')
      expect(await claimJobs(sql, s(), claim('planned', 10))).toHaveLength(1)
    }
    const plans = await sql<{ generic: number; custom: number }[]>`
      select generic_plans::int as generic, custom_plans::int as custom from pg_prepared_statements
      where statement like '%jsonb_to_recordset%' and statement not like '%dead as%' and statement not like '%pg_prepared_statements%'`
    expect(plans).toHaveLength(1)
    // The server tries five custom plans first, then keeps the generic one.
    expect(plans[0]!.custom).toBeLessThanOrEqual(5)
    expect(plans[0]!.generic).toBeGreaterThanOrEqual(7)
  })

  it('returns a name’s claimed jobs highest priority first, then oldest', async () => {
    const ids: string[] = []
    for (const p of [0, 5, -3, 9, 5]) ids.push(await enqueue('ordered', p))
    const rows = await claimJobs(sql, s(), claim('ordered', 5))
    expect(rows.map((r) => r.id)).toEqual([ids[3], ids[1], ids[4], ids[0], ids[2]])
  })
})

describe('a worker’s claim rounds', () => {
  let db: TestDatabase
  beforeAll(async () => {
    db = await testDatabase()
  })
  afterAll(async () => {
    await db?.drop()
  })

  it('claims again at once when a wake-up came while a claim that found fewer jobs than asked was running', async () => {
    const a = await member(db.url, 'racer')
    const marks: JobsMark[] = []
    /** The stages marked after A's claim returned, up to the next turn of the event loop. */
    let afterA: string[] | null = null
    let idA = ''
    const onMark = (m: unknown) => {
      const mark = m as JobsMark
      marks.push(mark)
      if (mark.stage === 'claim-returned' && mark.ids.includes(idA)) {
        const at = marks.length
        setImmediate(() => (afterA = marks.slice(at).map((x) => x.stage)))
      }
    }
    subscribe('chorus:jobs', onMark)
    const gate = defer<void>()
    const lock = await db.sql.reserve()
    try {
      const started: string[] = []
      a.jobs.define(
        'race',
        async (payload) => {
          started.push(payload as string)
          await gate.promise
        },
        { concurrency: 2 },
      )
      await eventually(() => marks.some((m) => m.stage === 'claim-returned'), 'the first claim round')
      // Holding this lock, a claim that found a job waits in nextval, after its snapshot was taken.
      await lock`begin`
      await lock`alter sequence chorus.job_claims cache 1`
      idA = await a.jobs.enqueue('race', 'A')
      await eventually(async () => (await db.sql<{ n: number }[]>`select count(*)::int as n from pg_locks where relation = 'chorus.job_claims'::regclass and not granted`)[0]!.n > 0, 'a claim waiting')
      // B commits after that claim's snapshot, and its wake-up comes while the claim runs.
      const from = marks.length
      await a.jobs.enqueue('race', 'B')
      await eventually(() => marks.slice(from).some((m) => m.stage === 'wake-received'), 'the wake-up of B')
      await lock`rollback`
      // The claim returns A alone, fewer than the two it asked for: B's wake-up keeps the backlog,
      // so the round claims again at once instead of leaving B to the safety poll.
      const after = await eventually(() => afterA, 'the claim of A')
      expect(after).toContain('claim-issued')
      await eventually(() => started.includes('B'), 'B to start')
      expect(started).toEqual(['A', 'B'])
    } finally {
      lock.release()
      gate.resolve()
      unsubscribe('chorus:jobs', onMark)
      await a.close()
    }
  })
})
