import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { Proc } from '../helpers/proc.js'

const fixture = new URL('../fixtures/worker.mjs', import.meta.url).pathname
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('cron across real processes', () => {
  let db: TestDatabase
  const procs: Proc[] = []
  beforeAll(async () => {
    db = await testDatabase()
    await db.sql`create table chorus.test_cron_runs (tick timestamptz not null, instance text not null, at timestamptz not null default clock_timestamp())`
  })
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()))
    await db.drop()
  })

  it('runs an every-second schedule once per tick on 3 instances, across a kill -9 of the last runner', async () => {
    const env = { DATABASE_URL: db.url, CHORUS_SECRET: 'test-secret-0123456789', CHORUS_PRESET: 'local', FIXTURE_MODE: 'cron' }
    const ids = ['c1', 'c2', 'c3']
    for (const id of ids) procs.push(new Proc(fixture, [], { ...env, CHORUS_INSTANCE_ID: id }))
    await Promise.all(procs.map((p) => p.waitFor((l) => l.type === 'ready', 30_000, 'ready')))
    await sleep(8000)

    // Kill the instance that ran the latest tick, right after it ran it.
    const [latest] = await db.sql<{ tick: Date; instance: string }[]>`select tick, instance from chorus.test_cron_runs order by tick desc limit 1`
    expect(latest).toBeDefined()
    const victim = latest!.instance
    procs[ids.indexOf(victim)]!.kill('SIGKILL')
    const killedAt = Date.now()
    await sleep(12_000)
    const stoppedAt = Date.now()
    await Promise.all(procs.map((p) => p.stop()))

    const runs = await db.sql<{ tick: Date; n: number; instances: string[] }[]>`
      select tick, count(*)::int as n, array_agg(instance) as instances from chorus.test_cron_runs group by tick order by tick`
    const ticks = runs.map((r) => r.tick.getTime())
    const doubled = runs.filter((r) => r.n !== 1)
    expect(doubled).toEqual([])
    // No tick lost: every second from the first run to the last one before stopping.
    const first = ticks[0]!
    const last = ticks.filter((t) => t <= stoppedAt - 2000).at(-1)!
    const missing: number[] = []
    for (let t = first; t <= last; t += 1000) if (!ticks.includes(t)) missing.push(t)
    expect(missing).toEqual([])
    const after = runs.filter((r) => r.tick.getTime() > killedAt)
    expect(after.every((r) => !r.instances.includes(victim))).toBe(true)
    const perInstance = runs.flatMap((r) => r.instances).reduce<Record<string, number>>((a, i) => ({ ...a, [i]: (a[i] ?? 0) + 1 }), {})
    console.log(
      `${runs.length} ticks over ${Math.round((last - first) / 1000) + 1} s, each run exactly once (by instance: ${JSON.stringify(perInstance)}); ` +
        `killed ${victim} right after it ran the tick of ${latest!.tick.toISOString()}; ${after.length} ticks after the kill, none lost`,
    )
    expect(ticks.length).toBeGreaterThanOrEqual(15)
  })
})
