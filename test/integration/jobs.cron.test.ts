import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Cluster } from '../../src/index.js'
import { jobStatus } from '../../src/jobs/status.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { eventually, member, record } from '../helpers/cluster.js'

describe('cron', () => {
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

  it('rejects an invalid schedule with a typed error and schedules nothing', () => {
    const noop = () => undefined
    const code = (fn: () => void) => {
      try {
        fn()
      } catch (err) {
        return (err as { code?: string }).code
      }
      return 'no error'
    }
    expect(code(() => a.jobs.cron('bad', 'every minute please', noop))).toBe('CHORUS_ERR_CRON_SPEC_INVALID')
    expect(code(() => a.jobs.cron('bad', '61 * * * *', noop))).toBe('CHORUS_ERR_CRON_SPEC_INVALID')
    expect(code(() => a.jobs.cron('bad', '', noop))).toBe('CHORUS_ERR_CRON_SPEC_INVALID')
    expect(code(() => a.jobs.cron('bad', '* * * * *', noop, { timezone: 'Mars/Olympus' }))).toBe('CHORUS_ERR_CRON_OPTIONS_INVALID')
    expect(code(() => a.jobs.cron('bad', '* * * * *', noop, { missed: 'all' as never }))).toBe('CHORUS_ERR_CRON_OPTIONS_INVALID')
    expect(code(() => a.jobs.cron('', '* * * * *', noop))).toBe('CHORUS_ERR_CRON_NAME_INVALID')
    expect(code(() => a.jobs.cron('bad', '* * * * *', 'noop' as never))).toBe('CHORUS_ERR_CRON_OPTIONS_INVALID')
    a.jobs.cron('twice', '0 0 1 1 *', noop)
    expect(code(() => a.jobs.cron('twice', '0 0 1 1 *', noop))).toBe('CHORUS_ERR_CRON_DUPLICATE')
    // A bad schedule left no trace: it can be defined properly afterwards.
    a.jobs.cron('bad', '0 0 1 1 *', noop)
  })

  it('runs each tick of an every-second schedule once across instances', async () => {
    const runs: { tick: number; on: string }[] = []
    for (const c of [a, b]) c.jobs.cron('second', '* * * * * *', ({ tick }) => void runs.push({ tick: tick.getTime(), on: c.instanceId }))
    await eventually(() => runs.length >= 4, 'four ticks', 10_000)
    await new Promise((r) => setTimeout(r, 300))
    const ticks = runs.map((r) => r.tick).sort((x, y) => x - y)
    expect(new Set(ticks).size).toBe(ticks.length)
    for (const t of ticks) expect(t % 1000).toBe(0)
    for (let i = 1; i < ticks.length; i++) expect(ticks[i]! - ticks[i - 1]!).toBe(1000)
    const status = await jobStatus(db.sql as never)
    const s = status.cron.find((c) => c.name === 'second')!
    expect(s.lastTick!.getTime()).toBeGreaterThanOrEqual(ticks.at(-1)!)
    expect(s.nextTick!.getTime()).toBeGreaterThan(s.lastTick!.getTime())
  })

  it('runs a missed tick once under run-once, and skips it under skip', async () => {
    const hourAgo = new Date(Date.now() - 3600_000)
    await db.sql`insert into chorus.cron_schedules (name, spec, last_tick) values ('catchup', '0 * * * * *', ${hourAgo}), ('skipper', '0 * * * * *', ${hourAgo})`
    const missed = record(a, 'cron:tick:missed')
    const ran: Date[] = []
    const skipped: Date[] = []
    a.jobs.cron('catchup', '0 * * * * *', ({ tick }) => void ran.push(tick), { missed: 'run-once' })
    a.jobs.cron('skipper', '0 * * * * *', ({ tick }) => void skipped.push(tick), { missed: 'skip' })
    await eventually(() => ran.length === 1, 'the catch-up run')
    await eventually(() => missed.some((m) => m.name === 'skipper'), 'the missed event')
    const latestMinute = Math.floor(Date.now() / 60_000) * 60_000
    expect(ran[0]!.getTime()).toBeGreaterThanOrEqual(latestMinute - 60_000)
    expect(ran[0]!.getTime() % 60_000).toBe(0)
    // Unless a minute boundary passed meanwhile, nothing else ran.
    if (Date.now() - latestMinute < 50_000) {
      await new Promise((r) => setTimeout(r, 300))
      expect(skipped).toEqual([])
      expect(ran).toHaveLength(1)
    }
  })
})
