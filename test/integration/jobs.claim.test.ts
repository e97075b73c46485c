import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { schemaName, sequenceName } from '../../src/db/schema.js'
import { claimJobs, type ClaimJobs } from '../../src/jobs/sql/claimJobs.js'
import { insertJob } from '../../src/jobs/sql/insertJob.js'
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
