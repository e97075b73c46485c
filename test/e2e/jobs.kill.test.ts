import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { Proc } from '../helpers/proc.js'

const fixture = new URL('../fixtures/worker.mjs', import.meta.url).pathname
const EFFECT_JOBS = 5000
const PLAIN_JOBS = 600
const failAfterMs = 2500

describe('jobs across real processes, one killed with kill -9', () => {
  let db: TestDatabase
  const procs: Proc[] = []
  beforeAll(async () => {
    db = await testDatabase()
    await db.sql`create table chorus.test_effects (job_id bigint not null, n int not null, instance text not null, at timestamptz not null default clock_timestamp())`
    await db.sql`create table chorus.test_plain_runs (job_id bigint not null, instance text not null, attempt int not null, at timestamptz not null default clock_timestamp())`
  })
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()))
    await db.drop()
  })

  const one = async <T>(q: Promise<T[]>) => (await q)[0]!

  it('gives each transactional job exactly one effect, runs plain jobs at least once, and re-runs the dead claims within seconds', async () => {
    const env = { DATABASE_URL: db.url, CHORUS_SECRET: 'test-secret-0123456789', CHORUS_PRESET: 'local', FIXTURE_MODE: 'jobs', FIXTURE_SLEEP_MS: '0', FIXTURE_PLAIN_SLEEP_MS: '20' }
    const ids = ['w1', 'w2', 'w3']
    for (const id of ids) procs.push(new Proc(fixture, [], { ...env, CHORUS_INSTANCE_ID: id }))
    await Promise.all(procs.map((p) => p.waitFor((l) => l.type === 'ready', 30_000, 'ready')))

    // Every process enqueues its share, in batches; the plain jobs once a fifth of the effects are done.
    const share = Math.ceil(EFFECT_JOBS / 3)
    procs.forEach((p, i) => {
      const from = i * share
      p.send({ cmd: 'enqueue', name: 'effect', from, count: Math.min(share, EFFECT_JOBS - from) })
    })
    let plainSent = false

    // Mid-run: kill -9 a process holding claims of both kinds.
    let victim = ''
    const deadline = Date.now() + 30_000
    for (;;) {
      const { n } = await one(db.sql<{ n: number }[]>`select count(*)::int as n from chorus.test_effects`)
      if (n >= EFFECT_JOBS / 5 && !plainSent) {
        plainSent = true
        procs.forEach((p, i) => p.send({ cmd: 'enqueue', name: 'plain', from: i * (PLAIN_JOBS / 3), count: PLAIN_JOBS / 3 }))
      }
      const holders = await db.sql<{ claimed_by: string }[]>`
        select claimed_by from chorus.jobs where state = 'running' and name in ('effect', 'plain')
        group by claimed_by having count(distinct name) = 2 order by count(*) desc`
      if (plainSent && holders[0]) {
        victim = holders[0].claimed_by
        break
      }
      if (Date.now() > deadline) throw new Error('the run never got going')
      await new Promise((r) => setTimeout(r, 10))
    }
    const killedAt = Date.now()
    procs[ids.indexOf(victim)]!.kill('SIGKILL')
    const claimed = await db.sql<{ id: string; name: string }[]>`
      select id, name from chorus.jobs where state = 'running' and claimed_by = ${victim} and name in ('effect', 'plain')`
    const { n: doneAtKill } = await one(db.sql<{ n: number }[]>`select count(*)::int as n from chorus.test_effects`)

    // Everything completes on the survivors.
    const until = Date.now() + 45_000
    for (;;) {
      const { n } = await one(db.sql<{ n: number }[]>`select count(*)::int as n from chorus.jobs where state = 'completed' and name in ('effect', 'plain')`)
      if (n === EFFECT_JOBS + PLAIN_JOBS) break
      if (Date.now() > until) throw new Error(`only ${n} of ${EFFECT_JOBS + PLAIN_JOBS} jobs completed`)
      await new Promise((r) => setTimeout(r, 100))
    }

    const effects = await one(db.sql<{ rows: number; jobs: number; ns: number }[]>`
      select count(*)::int as rows, count(distinct job_id)::int as jobs, count(distinct n)::int as ns from chorus.test_effects`)
    expect(effects).toEqual({ rows: EFFECT_JOBS, jobs: EFFECT_JOBS, ns: EFFECT_JOBS })
    const plain = await one(db.sql<{ jobs: number; runs: number }[]>`select count(distinct job_id)::int as jobs, count(*)::int as runs from chorus.test_plain_runs`)
    expect(plain.jobs).toBe(PLAIN_JOBS)
    expect(plain.runs).toBeGreaterThanOrEqual(PLAIN_JOBS)

    // The dead instance's claims ran again on a survivor; when did each first start there?
    expect(claimed.length).toBeGreaterThan(0)
    const rerun = await db.sql<{ id: string; first: Date }[]>`
      select c.id, least(
        (select min(e.at) from chorus.test_effects e where e.job_id = c.id::bigint and e.instance <> ${victim}),
        (select min(p.at) from chorus.test_plain_runs p where p.job_id = c.id::bigint and p.instance <> ${victim})) as first
      from unnest(${claimed.map((c) => c.id)}::text[]) as c(id)`
    expect(rerun.every((r) => r.first !== null)).toBe(true)
    const restartMs = Math.max(...rerun.map((r) => r.first.getTime() - killedAt))
    const byName = claimed.reduce<Record<string, number>>((acc, c) => ({ ...acc, [c.name]: (acc[c.name] ?? 0) + 1 }), {})
    console.log(
      `kill -9 of ${victim} after ${doneAtKill} effects, holding ${claimed.length} claims (${JSON.stringify(byName)}): ` +
        `all re-ran on survivors within ${restartMs} ms (failAfter ${failAfterMs} ms); ` +
        `${effects.rows} effect rows for ${EFFECT_JOBS} jobs; ${plain.runs} plain runs for ${PLAIN_JOBS} jobs`,
    )
    // Seconds, not the 15 minutes or 4 hours of lease expiry elsewhere: failAfter plus a generous margin.
    expect(restartMs).toBeLessThan(failAfterMs + 7500)
  })
})
