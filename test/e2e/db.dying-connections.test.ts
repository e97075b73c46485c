// Dying connections never crash an instance: two instance processes under load on every subsystem have
// their backends terminated (in running transactional jobs, in queries, idle, during COMMIT) and stay up with
// no uncaught exception or unhandled rejection, one effect per transactional job, no job lost, typed errors
// only; and the driver as shipped settles a query sent into a reset connection's last moment.
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { Proc, type Line } from '../helpers/proc.js'

const fixture = new URL('../fixtures/dying-node.mjs', import.meta.url).pathname
const ids = ['d1', 'd2']
/** Every connection an instance opens, by the purpose in its application_name (see src/db/connect.ts). */
const PURPOSES = ['work', 'jobs', 'locks', 'control', 'publish', 'listen'] as const
type Purpose = (typeof PURPOSES)[number]
/**
 * A lock the test holds so that this connection's next statement of instance `id` waits inside a
 * query (state active, waiting on the lock), which makes an in-query kill certain rather than a race:
 * work — map increments and sets; jobs — claims and plain completions; locks — lock_acquire;
 * control — the heartbeat, on the victim's own row only, so its peer keeps renewing; publish — a
 * topic message above NOTIFY's limit, stored by reference in a transaction of the publish
 * connection. The LISTEN connection only ever waits idle.
 */
const BLOCK: Record<Purpose, ((id: string) => string) | null> = {
  work: () => 'lock table chorus.map_entries in exclusive mode',
  jobs: () => 'lock table chorus.jobs in exclusive mode',
  locks: () => 'lock table chorus.lock_state in exclusive mode',
  control: (id) => `select 1 from chorus.members where instance_id = '${id}' for update`,
  publish: () => 'lock table chorus.bus_payloads in exclusive mode',
  listen: null,
}
/**
 * Errors an operation may fail with when its connection dies: Chorus' own, or the driver's documented
 * ones — its connection errors, and the socket's Node.js system errors, which it passes on as they are.
 */
const DRIVER_CODES = new Set(['CONNECTION_CLOSED', 'CONNECTION_DESTROYED', 'CONNECTION_ENDED', 'CONNECT_TIMEOUT', 'ECONNRESET', 'EPIPE'])
const typed = (l: Line) => {
  const code = String(l.code)
  if (code.startsWith('CHORUS_ERR_') || DRIVER_CODES.has(code)) return true
  // The server's own word for a terminated backend (57P01 admin_shutdown) or a broken connection (class 08).
  return l.name === 'PostgresError' && /^(57P0[1-3]|08...)$/.test(code)
}

interface Backend {
  pid: number
  app: string
  state: string
  query: string
}

describe('dying connections', () => {
  let db: TestDatabase
  const procs: Proc[] = []
  const kills: { phase: string; purpose: string; app: string; state: string; query: string; at: number }[] = []

  beforeAll(async () => {
    db = await testDatabase()
    await db.sql`create table public.dying_effects (job_id bigint not null, key text not null, instance text not null)`
    await db.sql`create table public.dying_plain_runs (job_id bigint not null, key text not null, instance text not null)`
    // Slow COMMITs: a deferred constraint trigger sleeps at commit time, so a transactional job's
    // COMMIT is in flight (query 'commit', waiting on PgSleep) for 100 ms and a kill lands inside it:
    // the client sent COMMIT and never hears back; the server rolls the transaction back.
    await db.sql.unsafe(`
      create function public.dying_slow_commit() returns trigger language plpgsql as $$
        begin perform pg_sleep(0.1); return null; end $$;
      create constraint trigger dying_slow_commit after insert on public.dying_effects
        deferrable initially deferred for each row execute function public.dying_slow_commit()`)
  })
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()))
    await db.drop()
  })

  /** What the instances reported that would explain a stall: crashes, exits. */
  function status(): string {
    return `${kills.length} backends terminated so far; ` + procs
      .map((p, i) => {
        const crashes: Record<string, number> = {}
        for (const l of p.lines.filter((l) => l.type === 'crash')) crashes[`${l.event}: ${l.name} ${l.message}`] = (crashes[`${l.event}: ${l.name} ${l.message}`] ?? 0) + 1
        return `${ids[i]}: exit ${p.child.exitCode ?? p.child.signalCode ?? 'none'}, crashes ${JSON.stringify(crashes)}`
      })
      .join('; ')
  }

  /** Waits for a backend of `id`'s `purpose` connection in this database matching `where`. */
  async function find(id: string, purpose: Purpose, where: postgres.PendingQuery<postgres.Row[]>, what: string): Promise<Backend> {
    const deadline = Date.now() + 20_000
    for (;;) {
      const [b] = await db.sql<Backend[]>`
        select pid, application_name as app, state, query from pg_stat_activity
        where datname = ${db.name} and application_name = ${`chorus:${purpose}:${id}`} and ${where}
        order by random() limit 1`
      if (b) return b
      if (Date.now() > deadline) throw new Error(`no backend of ${id}'s ${purpose} connection ${what} within 20 s; ${status()}`)
      await new Promise((r) => setTimeout(r, 10))
    }
  }

  /** Terminates `b` and waits until the server has removed it. */
  async function kill(phase: string, purpose: Purpose, b: Backend): Promise<Date> {
    const [{ at }] = await db.sql<[{ at: Date }]>`select pg_terminate_backend(${b.pid}), clock_timestamp() as at`
    kills.push({ phase, purpose, app: b.app, state: b.state, query: b.query.replace(/\s+/g, ' ').slice(0, 60), at: Date.now() })
    for (;;) {
      const rows = await db.sql`select 1 from pg_stat_activity where pid = ${b.pid}`
      if (rows.length === 0) return at
      await new Promise((r) => setTimeout(r, 5))
    }
  }

  /** Holds `lock` until a statement of `id`'s `purpose` connection waits on it, and kills that backend. */
  async function killBlocked(phase: string, id: string, purpose: Purpose, lock: string): Promise<Date> {
    return db.sql.begin(async (tx) => {
      await tx.unsafe(lock)
      return kill(phase, purpose, await find(id, purpose, db.sql`state = 'active' and wait_event_type = 'Lock'`, `waiting on the test's lock (${lock})`))
    })
  }

  /** Waits until `id` has renewed its membership after `since` (database time), rejoining first if it had isolated itself. */
  async function renewed(id: string, since: Date): Promise<void> {
    const deadline = Date.now() + 20_000
    while ((await db.sql`select 1 from chorus.members where instance_id = ${id} and status = 'up' and heartbeat_at > ${since}`).length === 0) {
      if (Date.now() > deadline) throw new Error(`${id} did not renew its membership within 20 s; ${status()}`)
      await new Promise((r) => setTimeout(r, 20))
    }
  }

  const count = async (q: Promise<{ n: number }[]>) => (await q)[0]!.n

  it('terminated backends in every state fail operations with typed errors; the instances stay up and keep every job effect exactly once', async () => {
    const env = { DATABASE_URL: db.url, CHORUS_SECRET: 'test-secret-0123456789', CHORUS_PRESET: 'local' }
    for (const id of ids) procs.push(new Proc(fixture, [], { ...env, CHORUS_INSTANCE_ID: id }))
    await Promise.all(procs.map((p) => p.waitFor((l) => l.type === 'ready', 30_000, 'ready')))
    for (const p of procs) p.send({ cmd: 'load' })
    const started = Date.now()
    while ((await count(db.sql`select count(*)::int as n from public.dying_effects`)) < 10) {
      if (Date.now() - started > 30_000) throw new Error('the load never got going')
      await new Promise((r) => setTimeout(r, 50))
    }

    // (a) 25 transactional jobs cut off mid-transaction: after the effect row was written, idle in
    // the transaction or inside a query of it.
    for (let i = 0; i < 25; i++) {
      const where =
        i % 2 === 0
          ? db.sql`state = 'idle in transaction' and query like 'insert into public.dying_effects%'`
          : db.sql`state = 'active' and xact_start is not null and query like 'select pg_sleep%'`
      await kill('in-transaction', 'work', await find(ids[i % 2]!, 'work', where, 'in a transactional job'))
    }

    // (b) Every connection, three times each: in a query (where one can be made to wait) and idle.
    // The control connection is cut again only once the instance has renewed since the last cut, so
    // no two kills fall within one heartbeat's reach of isolation.
    for (const purpose of PURPOSES) {
      for (let i = 0; i < 3; i++) {
        const id = ids[i % 2]!
        const block = BLOCK[purpose]
        for (const phase of block ? ['in-query', 'idle'] : ['idle']) {
          const at =
            phase === 'in-query'
              ? await killBlocked(phase, id, purpose, block!(id))
              : await kill(phase, purpose, await find(id, purpose, db.sql`state = 'idle'`, 'idle'))
          if (purpose === 'control') await renewed(id, at)
        }
      }
    }

    // (c) 10 COMMITs in flight: the kill lands while the commit-time trigger sleeps.
    for (let i = 0; i < 10; i++) {
      const where = db.sql`state = 'active' and lower(query) = 'commit' and wait_event = 'PgSleep'`
      await kill('commit', 'work', await find(ids[i % 2]!, 'work', where, 'in COMMIT'))
    }

    for (const p of procs) p.send({ cmd: 'stop' })
    // An operation that neither resolves nor fails keeps its loop from stopping: name it.
    const stopped = await Promise.all(procs.map((p) => p.waitFor((l) => l.type === 'stopped', 30_000, 'stopped'))).catch((err: Error) => {
      const stuck = procs.map((p, i) => `${ids[i]}: ${JSON.stringify(p.lines.filter((l) => l.type === 'stuck').at(-1)?.ops ?? 'nothing')}`)
      throw new Error(`operations never settled: ${stuck.join('; ')}; ${status()}`, { cause: err })
    })

    // Every job either instance was told is enqueued runs to completion.
    const until = Date.now() + 30_000
    for (;;) {
      const left = await count(db.sql`select count(*)::int as n from chorus.jobs where name in ('effect', 'plain') and state <> 'completed'`)
      if (left === 0) break
      if (Date.now() > until) throw new Error(`${left} jobs never completed`)
      await new Promise((r) => setTimeout(r, 100))
    }

    // The instances still work: a lock, a map increment, a job run on each.
    for (const p of procs) p.send({ cmd: 'check' })
    const checked = await Promise.all(procs.map((p) => p.waitFor((l) => l.type === 'checked', 30_000, 'checked')))

    const crashes = procs.flatMap((p) => p.lines.filter((l) => l.type === 'crash'))
    const failures = procs.flatMap((p) => p.lines.filter((l) => l.type === 'fail'))
    const byCode = failures.reduce<Record<string, number>>((acc, f) => ({ ...acc, [`${f.op} ${f.name}:${f.code}`]: (acc[`${f.op} ${f.name}:${f.code}`] ?? 0) + 1 }), {})
    const byPhase = kills.reduce<Record<string, number>>((acc, k) => ({ ...acc, [`${k.phase}:${k.purpose}`]: (acc[`${k.phase}:${k.purpose}`] ?? 0) + 1 }), {})
    // An isolation is allowed (the instance could not renew in time and stood back), but say what preceded it.
    const isolations = procs.flatMap((p, i) =>
      p.lines
        .filter((l) => l.type === 'isolated')
        .map((l) => {
          const last = kills.filter((k) => k.at <= (l.at as number)).at(-1)
          return `${ids[i]} ${(l.at as number) - (last?.at ?? 0)} ms after ${last?.phase}:${last?.app}`
        }),
    )
    console.log(
      `${kills.length} backends terminated ${JSON.stringify(byPhase)}; isolations ${JSON.stringify(isolations)}\n` +
        `failed operations: ${JSON.stringify(byCode)}\n` +
        `job attempts that failed or lost their claim: ${JSON.stringify(stopped.map((s) => s.attempts))}\n` +
        `acknowledged: ${JSON.stringify(stopped.map((s) => s.acked))}; received ${JSON.stringify(stopped.map((s) => s.received))}`,
    )

    // Never crashed, never an uncaught exception or unhandled rejection.
    expect(crashes).toEqual([])
    for (const p of procs) expect(p.child.exitCode).toBe(null)
    // Failed operations failed with typed errors.
    expect(failures.filter((f) => !typed(f))).toEqual([])
    expect(checked.map((c) => ({ error: c.error, job: c.job, increment: c.increment }))).toEqual(ids.map(() => ({ error: undefined, job: true, increment: 1 })))

    // Transactional jobs: one effect each, none without it, and every acknowledged enqueue among them.
    expect(await db.sql`select job_id, count(*)::int as n from public.dying_effects group by job_id having count(*) > 1`).toEqual([])
    expect(
      await db.sql`select id from chorus.jobs j where name = 'effect' and not exists (select 1 from public.dying_effects e where e.job_id = j.id)`,
    ).toEqual([])
    expect(await db.sql`select job_id from public.dying_effects e where not exists (select 1 from chorus.jobs j where j.id = e.job_id)`).toEqual([])
    // Plain jobs ran at least once each.
    expect(await db.sql`select id from chorus.jobs j where name = 'plain' and not exists (select 1 from public.dying_plain_runs r where r.job_id = j.id)`).toEqual([])
    for (const [i, id] of ids.entries()) {
      const acked = stopped[i]!.acked as { effect: number; plain: number; increments: number; incrementsFailed: number }
      for (const name of ['effect', 'plain'] as const) {
        const keys = Array.from({ length: acked[name] }, (_, k) => `${id}:${k}`)
        expect(await count(db.sql`select count(*)::int as n from chorus.jobs where name = ${name} and key = any(${keys}::text[])`)).toBe(keys.length)
      }
      // Map counters: every acknowledged increment counted; a failed one counted at most once (it may have committed).
      const [hits] = await db.sql<{ value: string }[]>`select value from chorus.map_entries where map = 'dying' and key = ${`hits:${id}`}`
      expect(Number(hits!.value)).toBeGreaterThanOrEqual(acked.increments)
      expect(Number(hits!.value)).toBeLessThanOrEqual(acked.increments + acked.incrementsFailed)
    }
  }, 120_000)

  // The driver as Chorus ships it (patched): a query sent on a connection whose socket has failed but
  // not yet closed must still settle. A backend terminated while a second query waits unread behind
  // the running one is reset by the server (ECONNRESET rather than a clean close), and a caller that
  // retries at once on failure, as the bus publisher does, sends its next query into that window.
  it('a query sent right after its predecessor failed on a reset connection settles', async () => {
    const sql = postgres(db.url, { max: 1, onnotice: () => undefined, fetch_types: false, connection: { application_name: 'dying:reset' } })
    const settle = (q: Promise<unknown>) => q.then(() => 'ok', (e: { code?: string }) => String(e.code))
    const outcomes: Record<string, number> = {}
    let resets = 0
    try {
      // A reset is the usual outcome, a clean close the occasional one: go on until five resets.
      for (let round = 0; round < 60 && resets < 5; round++) {
        await sql`select 1`
        const next: Promise<string>[] = []
        const running = settle(sql`select pg_sleep(30)`).then((code) => {
          next.push(settle(sql`select 2`))
          return code
        })
        let rows: { pid: number }[] = []
        while (rows.length === 0) {
          rows = await db.sql<{ pid: number }[]>`
            select pid from pg_stat_activity where datname = ${db.name} and application_name = 'dying:reset' and state = 'active' and query like 'select pg_sleep%'`
          if (rows.length === 0) await new Promise((r) => setTimeout(r, 5))
        }
        const queued = settle(sql`select 3`)
        await new Promise((r) => setImmediate(r)) // its bytes leave with the driver's next write turn
        await new Promise((r) => setImmediate(r))
        await db.sql`select pg_terminate_backend(${rows[0]!.pid})`
        const first = await running
        await queued
        if (first === 'ECONNRESET') resets++
        const then = await Promise.race([next[0]!, new Promise<string>((r) => setTimeout(() => r('never settled'), 10_000))])
        outcomes[`${first}, then ${then}`] = (outcomes[`${first}, then ${then}`] ?? 0) + 1
        if (then === 'never settled') break
      }
    } finally {
      await sql.end({ timeout: 0 })
    }
    console.log(`first query failed with, then the next one: ${JSON.stringify(outcomes)}`)
    expect(resets).toBeGreaterThan(0)
    expect(Object.keys(outcomes).filter((k) => k.endsWith('never settled'))).toEqual([])
  })
})
