// Failover of the database itself: a real streaming replica (pg_basebackup) is promoted while three
// instances run under load on a multi-host DATABASE_URL; nothing acknowledged is lost or doubled
// (job effects, fencing tokens, reliable-topic messages) and the cluster serves again.
import { join } from 'node:path'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Proc, type Line } from '../helpers/proc.js'
import { makeSynchronous, startReplicaPair, type ReplicaPair } from '../helpers/replica.js'

const root = new URL('../..', import.meta.url).pathname
const fixture = join(root, 'test/fixtures/failover-node.mjs')
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** What each instance printed since `since`: counts per kind, its last failures, its stderr tail. */
function diagnosis(procs: Proc[], since: number): string {
  return procs
    .map((p, i) => {
      const lines = p.lines.filter((l) => (l.at as number) > since)
      const counts: Record<string, number> = {}
      for (const l of lines) counts[l.type] = (counts[l.type] ?? 0) + 1
      const failures = lines.filter((l) => /failed|refused|crash|isolated|rejoined/.test(l.type)).slice(-6)
      return `node-${i + 1} (exit ${p.child.exitCode}): ${JSON.stringify(counts)}\n  ${failures.map((l) => JSON.stringify(l)).join('\n  ')}\n  ${p.stderr.slice(-4).map((l) => l.slice(0, 400)).join('\n  ')}`
    })
    .join('\n')
}

describe('a cluster on a primary and its streaming standby', () => {
  let pair: ReplicaPair
  const procs: Proc[] = []

  beforeAll(async () => {
    // fsync off: the test stops server processes, never the machine, so what reached the kernel survives.
    pair = await startReplicaPair({ max_connections: '300', fsync: 'off' })
    // Synchronous replication: a COMMIT returns only once the standby holds it. Without it the
    // primary acknowledges commits the standby may never receive, and a promotion loses them by
    // design of asynchronous replication, whatever the client does — "acknowledged" would not mean
    // "survives the primary". Chorus's own asynchronous commits (job claims, bus) are re-done by design.
    await makeSynchronous(pair)
    const admin = postgres(pair.primary.url(), { max: 1, onnotice: () => undefined })
    await admin`create database failover`
    await admin.end()
    const sql = postgres(pair.primary.url('failover'), { max: 1, onnotice: () => undefined })
    await sql.unsafe(`
      create table public.failover_effects (key text not null, run text not null, instance text not null, attempt int not null);
      create table public.failover_guard (id int primary key, token bigint not null);
      insert into public.failover_guard values (1, 0);
      create table public.failover_fenced (id bigserial primary key, token bigint not null, instance text not null);
    `)
    await sql.end()
  })

  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()))
    await pair?.close()
  })

  it('loses and doubles nothing acknowledged when the standby is promoted under load, and serves again', async () => {
    for (const i of [1, 2, 3]) {
      procs.push(
        new Proc(fixture, [], {
          DATABASE_URL: pair.url('failover'),
          CHORUS_INSTANCE_ID: `node-${i}`,
          CHORUS_SECRET: 'failover-system-secret-0123456789',
        }),
      )
    }
    await Promise.all(procs.map((p) => Promise.race([p.waitFor((l) => l.type === 'ready', 60_000, 'ready'), p.exited.then(() => p.lines.at(-1))])))
    for (const p of procs) expect(p.child.exitCode, `${JSON.stringify(p.lines.at(-1))}\n${p.stderr.slice(-20).join('\n')}`).toBeNull()
    const all = () => procs.flatMap((p) => p.lines)
    const count = (type: string, after = 0) => all().filter((l) => l.type === type && (l.at as number) > after).length

    for (const p of procs) p.send({ cmd: 'load' })
    // Load runs on the primary until each kind of work has been acknowledged a few times.
    await expect.poll(() => [count('completed') >= 20, count('fenced') >= 10, count('published') >= 20], { timeout: 60_000, interval: 200 }).toEqual([true, true, true])

    const stoppedAt = Date.now()
    await pair.primary.stop('immediate')
    await pair.standby.promote()
    const promotedAt = Date.now()

    // Every kind of work succeeds again on the promoted standby.
    const firstAfter = (type: string) => all().find((l) => l.type === type && (l.at as number) > promotedAt)
    const waiting = () => ['enqueued', 'completed', 'acquired', 'fenced', 'published'].filter((t) => !firstAfter(t))
    for (let deadline = Date.now() + 60_000; waiting().length > 0 && Date.now() < deadline; ) await sleep(100)
    expect(waiting(), diagnosis(procs, promotedAt)).toEqual([])
    const serve = Object.fromEntries(['enqueued', 'completed', 'acquired', 'fenced', 'published'].map((t) => [t, (firstAfter(t)!.at as number) - promotedAt]))
    console.log(
      `failover: primary stopped → promoted in ${promotedAt - stoppedAt} ms; first success after the promotion (ms): ` +
        `${Object.entries(serve).map(([k, v]) => `${k} ${v}`).join(', ')}; all served again after ${Math.max(...Object.values(serve))} ms`,
    )

    // A little more load on the new primary, then stop it and let every job that was enqueued finish.
    await expect.poll(() => count('completed', promotedAt) >= 20, { timeout: 30_000, interval: 200 }).toBe(true)
    for (const p of procs) p.send({ cmd: 'stop' })
    await Promise.all(procs.map((p) => p.waitFor((l) => l.type === 'stopped', 30_000, 'stopped')))

    const sql = postgres(pair.standby.url('failover'), { max: 1, onnotice: () => undefined })
    try {
      await expect
        .poll(async () => (await sql`select count(*)::int as n from chorus.jobs where name = 'effect' and state in ('queued', 'running')`)[0]!.n, { timeout: 60_000, interval: 250 })
        .toBe(0)
      for (const p of procs) expect(p.lines.filter((l) => l.type === 'crash'), p.stderr.slice(-20).join('\n')).toEqual([])
      for (const p of procs) expect(p.child.exitCode).toBeNull()

      // Jobs: each acknowledged enqueue has exactly one effect; no key has two; each acknowledged
      // completion's own run is the one the promoted database holds (it was not lost and re-run).
      const effects = await sql<{ key: string; run: string }[]>`select key, run from public.failover_effects`
      const byKey = new Map<string, string[]>()
      for (const e of effects) byKey.set(e.key, [...(byKey.get(e.key) ?? []), e.run])
      const doubled = [...byKey].filter(([, runs]) => runs.length > 1)
      expect(doubled, 'job effects written twice').toEqual([])
      const enqueued = all().filter((l) => l.type === 'enqueued').map((l) => l.key as string)
      expect(enqueued.filter((k) => !byKey.has(k)), 'acknowledged jobs without their effect').toEqual([])
      const completed = all().filter((l) => l.type === 'completed') as (Line & { key: string; run: string })[]
      expect(completed.filter((c) => byKey.get(c.key)?.[0] !== c.run), 'acknowledged completions not in the promoted database').toEqual([])

      // Locks: no fencing token handed out twice; tokens after the promotion above every earlier one;
      // each acknowledged fenced write is in the promoted database, in token order.
      const acquired = all().filter((l) => l.type === 'acquired').map((l) => ({ token: BigInt(l.token as string), at: l.at as number }))
      const tokens = acquired.map((a) => a.token)
      expect(new Set(tokens).size, 'fencing tokens handed out twice').toBe(tokens.length)
      const before = acquired.filter((a) => a.at <= stoppedAt).map((a) => a.token)
      const after = acquired.filter((a) => a.at > promotedAt).map((a) => a.token)
      const maxBefore = before.reduce((m, t) => (t > m ? t : m), 0n)
      expect(after.filter((t) => t <= maxBefore).map(String), `tokens after the promotion not above ${maxBefore}`).toEqual([])
      const fencedRows = await sql<{ token: string }[]>`select token::text from public.failover_fenced order by id`
      const stored = fencedRows.map((r) => BigInt(r.token))
      expect(stored.every((t, i) => i === 0 || t > stored[i - 1]!), 'fenced writes out of token order').toBe(true)
      const storedSet = new Set(stored)
      const fenced = all().filter((l) => l.type === 'fenced').map((l) => BigInt(l.token as string))
      expect(fenced.filter((t) => !storedSet.has(t)).map(String), 'acknowledged fenced writes lost').toEqual([])

      // Reliable topic: each acknowledged publish is in the log once, at its acknowledged offset; no
      // message twice; offsets dense from 1.
      const log = await sql<{ msg_offset: string; data: string }[]>`select m.msg_offset::text, m.data from chorus.reliable_topic_messages m where m.topic = 'failover' order by m.msg_offset`
      const offsets = log.map((m) => Number(m.msg_offset))
      expect(offsets, 'offsets not dense').toEqual(offsets.map((_, i) => i + 1))
      const where = new Map<string, number[]>()
      for (const m of log) {
        const { instance, seq } = JSON.parse(m.data) as { instance: string; seq: number }
        where.set(`${instance}:${seq}`, [...(where.get(`${instance}:${seq}`) ?? []), Number(m.msg_offset)])
      }
      expect([...where].filter(([, o]) => o.length > 1), 'messages stored twice').toEqual([])
      const published = procs.flatMap((p, i) => p.lines.filter((l) => l.type === 'published').map((l) => ({ id: `node-${i + 1}:${l.seq}`, offset: l.offset as number })))
      expect(published.filter((m) => where.get(m.id)?.[0] !== m.offset), 'acknowledged messages lost or moved').toEqual([])

      const failures = ['enqueue-failed', 'acquire-failed', 'fence-failed', 'fence-refused', 'publish-failed'].map((t) => `${t} ${count(t)}`).join(', ')
      console.log(
        `failover: ${enqueued.length} jobs acknowledged (${completed.length} completions seen), ${tokens.length} lock acquisitions ` +
          `(${fenced.length} fenced writes), ${published.length} publishes acknowledged; ${failures}`,
      )
    } finally {
      await sql.end({ timeout: 1 })
    }
  })
})
