import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Cluster } from '../../src/cluster.js'
import type { ReliableGap, ReliableSubscription } from '../../src/index.js'
import { sweepReliableTopics } from '../../src/state/reliable-topic.js'
import { STATE_SWEEP_CRON, sweepState } from '../../src/sweep.js'
import { eventually, member } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

/** Subscriptions here poll only once a minute: delivery within a test proves the bus woke them. */
const NO_POLL = { pollMs: 60_000 }

describe('reliable topics', () => {
  let db: TestDatabase
  let a: Cluster
  let b: Cluster
  const subs: ReliableSubscription<unknown>[] = []
  const track = <T>(s: ReliableSubscription<T>) => (subs.push(s as ReliableSubscription<unknown>), s)

  beforeAll(async () => {
    db = await testDatabase()
    a = await member(db.url, 'a')
    b = await member(db.url, 'b')
  })
  afterAll(async () => {
    await Promise.all(subs.map((s) => s.close()))
    await a?.close()
    await b?.close()
    await db?.drop()
  })

  it('gives dense offsets from 1 when two instances publish at once', async () => {
    const offsets = await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 2 ? a : b).reliableTopic<number>('dense').publish(i)))
    expect([...offsets].sort((x, y) => x - y)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1))
    expect(await a.reliableTopic('dense').head()).toBe(200)
  })

  it('delivers every message once and in offset order while publishers race, woken through the bus', async () => {
    const got: number[] = []
    track(await b.reliableTopic<string>('race').subscribe((_m, meta) => void got.push(meta.offset), NO_POLL))
    await Promise.all(Array.from({ length: 400 }, (_, i) => (i % 2 ? a : b).reliableTopic<string>('race').publish(`m${i}`)))
    await eventually(() => got.length >= 400, '400 deliveries')
    expect(got).toEqual(Array.from({ length: 400 }, (_, i) => i + 1))
  })

  it('starts at the latest message by default, or at an offset, or at the earliest retained', async () => {
    const t = a.reliableTopic<string>('starts')
    for (const m of ['x', 'y', 'z']) await t.publish(m)
    const latest: string[] = []
    const fromTwo: string[] = []
    const earliest: string[] = []
    track(await b.reliableTopic<string>('starts').subscribe((m) => void latest.push(m), NO_POLL))
    track(await b.reliableTopic<string>('starts').subscribe((m) => void fromTwo.push(m), { ...NO_POLL, from: 2 }))
    track(await b.reliableTopic<string>('starts').subscribe((m) => void earliest.push(m), { ...NO_POLL, from: 'earliest' }))
    await t.publish('w')
    await eventually(() => latest.length === 1 && fromTwo.length === 3 && earliest.length === 4, 'all three subscribers')
    expect(latest).toEqual(['w'])
    expect(fromTwo).toEqual(['y', 'z', 'w'])
    expect(earliest).toEqual(['x', 'y', 'z', 'w'])
  })

  it('passes the message, its offset, publisher and time to the handler, with a custom codec', async () => {
    const codec = { encode: (v: Date) => v.toISOString(), decode: (s: string) => new Date(s) }
    const seen: { value: Date; offset: number; publisher: string; publishedAt: Date }[] = []
    track(await b.reliableTopic<Date>('codec', { codec }).subscribe((value, meta) => void seen.push({ value, ...meta }), NO_POLL))
    const when = new Date('2030-01-02T03:04:05.000Z')
    await a.reliableTopic<Date>('codec', { codec }).publish(when)
    await eventually(() => seen.length === 1, 'the message')
    expect(seen[0]!.value).toEqual(when)
    expect(seen[0]!.offset).toBe(1)
    expect(seen[0]!.publisher).toBe('a')
    expect(seen[0]!.publishedAt).toBeInstanceOf(Date)
  })

  it('stores a group’s committed offset and resumes after it', async () => {
    const t = a.reliableTopic<number>('resume')
    const first: number[] = []
    const s1 = await t.subscribe((m) => void first.push(m), { ...NO_POLL, group: 'g', from: 'earliest' })
    for (let i = 1; i <= 5; i++) await t.publish(i)
    await eventually(() => first.length === 5, 'five messages')
    await s1.close()
    expect(await t.committed('g')).toBe(5)
    for (let i = 6; i <= 8; i++) await t.publish(i)
    const second: number[] = []
    // `from` applies only to a new group: this one resumes after offset 5.
    track(await b.reliableTopic<number>('resume').subscribe((m) => void second.push(m), { ...NO_POLL, group: 'g', from: 'latest' }))
    await eventually(() => second.length === 3, 'the three newer messages')
    expect(second).toEqual([6, 7, 8])
    expect(first).toEqual([1, 2, 3, 4, 5])
  })

  it('lets one subscription per group deliver; a standby takes over when it closes, losing nothing', async () => {
    const got: { at: string; m: number }[] = []
    const onA = track(await a.reliableTopic<number>('exclusive').subscribe((m) => void got.push({ at: 'a', m }), { ...NO_POLL, group: 'workers' }))
    const onB = track(await b.reliableTopic<number>('exclusive').subscribe((m) => void got.push({ at: 'b', m }), { ...NO_POLL, group: 'workers' }))
    expect([onA.state, onB.state]).toEqual(['active', 'standby'])
    const t = a.reliableTopic<number>('exclusive')
    for (let i = 1; i <= 10; i++) await t.publish(i)
    await eventually(() => got.length === 10, 'ten messages')
    await onA.close()
    for (let i = 11; i <= 20; i++) await t.publish(i)
    await eventually(() => got.length === 20, 'twenty messages')
    expect(onB.state).toBe('active')
    expect(got.map((g) => g.m)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1))
    expect(got.slice(0, 10).every((g) => g.at === 'a')).toBe(true)
    expect(got.slice(10).every((g) => g.at === 'b')).toBe(true)
  })

  it('takes a group over from a holder that is not a live member', async () => {
    const t = a.reliableTopic<number>('orphan')
    for (let i = 1; i <= 3; i++) await t.publish(i)
    await db.sql`
      insert into reliable_topic_groups (topic, grp, committed, holder, holder_epoch, holder_token, leased_at)
      values ('orphan', 'g', 1, 'ghost', 1, 'ghost-token', now())`
    const got: number[] = []
    const s = track(await b.reliableTopic<number>('orphan').subscribe((m) => void got.push(m), { ...NO_POLL, group: 'g' }))
    expect(s.state).toBe('active')
    await eventually(() => got.length === 2, 'the two uncommitted messages')
    expect(got).toEqual([2, 3])
    // A live holder keeps it.
    const other = track(await a.reliableTopic<number>('orphan').subscribe(() => undefined, { ...NO_POLL, group: 'g' }))
    expect(other.state).toBe('standby')
  })

  it('delivers a failed message again, keeping the order', async () => {
    const seen: number[] = []
    let failures = 0
    track(
      await b.reliableTopic<number>('retry').subscribe(
        (m) => {
          seen.push(m)
          if (m === 2 && failures++ < 2) throw new Error('not yet')
        },
        // The default safety poll stays on: this test is about redelivery order, not wake-ups.
        { group: 'g', from: 'earliest' },
      ),
    )
    for (let i = 1; i <= 3; i++) await a.reliableTopic<number>('retry').publish(i)
    await eventually(() => seen.at(-1) === 3, 'the last message')
    expect(seen).toEqual([1, 2, 2, 2, 3])
    // The commit follows the handler's return: wait for it rather than race it.
    await eventually(async () => (await a.reliableTopic('retry').committed('g')) === 3, 'the group to commit offset 3')
    expect(seen).toEqual([1, 2, 2, 2, 3])
  })

  it('keeps at most maxCount messages; a reader behind it gets a gap notice, then the oldest retained', async () => {
    const t = a.reliableTopic<number>('by-count', { retention: { maxCount: 5, maxAgeMs: null } })
    for (let i = 1; i <= 10; i++) await t.publish(i)
    // (The cluster's own sweep may run meanwhile; either way the result is the same.)
    await sweepReliableTopics(a.db.sql)
    expect(await t.oldest()).toBe(6)
    const gaps: ReliableGap[] = []
    const got: number[] = []
    track(await b.reliableTopic<number>('by-count').subscribe((m) => void got.push(m), { ...NO_POLL, from: 2, onGap: (g) => void gaps.push(g) }))
    await eventually(() => got.length === 5, 'the retained messages')
    expect(gaps).toEqual([{ from: 2, to: 5, missed: 4 }])
    expect(got).toEqual([6, 7, 8, 9, 10])
  })

  it('removes messages older than maxAgeMs; a group behind them gets a gap notice and goes on with new ones', async () => {
    const t = a.reliableTopic<string>('by-age', { retention: { maxAgeMs: 1, maxCount: null } })
    const old = await b.reliableTopic<string>('by-age').subscribe(() => undefined, { ...NO_POLL, group: 'late', from: 'earliest' })
    await old.close()
    for (const m of ['p', 'q', 'r']) await t.publish(m)
    await new Promise((r) => setTimeout(r, 20))
    await sweepReliableTopics(a.db.sql)
    expect(await t.oldest()).toBeNull()
    const gaps: ReliableGap[] = []
    const got: string[] = []
    track(await b.reliableTopic<string>('by-age').subscribe((m) => void got.push(m), { ...NO_POLL, group: 'late', onGap: (g) => void gaps.push(g) }))
    await eventually(() => gaps.length === 1, 'the gap notice')
    expect(gaps).toEqual([{ from: 1, to: 3, missed: 3 }])
    await t.publish('s')
    await eventually(() => got.length === 1, 'the new message')
    expect(got).toEqual(['s'])
    await eventually(async () => (await t.committed('late')) === 4, 'the group committed past the gap')
  })

  it('refuses oversized, unserialisable and badly named input with typed errors, writing nothing', async () => {
    const t = a.reliableTopic('limits', { maxMessageBytes: 100 })
    await expect(t.publish('x'.repeat(200))).rejects.toMatchObject({ code: 'CHORUS_ERR_STATE_VALUE_TOO_LARGE' })
    await expect(t.publish(10n as never)).rejects.toMatchObject({ code: 'CHORUS_ERR_STATE_VALUE_NOT_SERIALIZABLE' })
    await expect(t.publish(undefined)).rejects.toMatchObject({ code: 'CHORUS_ERR_STATE_VALUE_NOT_SERIALIZABLE' })
    expect(() => a.reliableTopic('bad name')).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_STATE_NAME_INVALID' }))
    expect(() => a.reliableTopic('r', { retention: { maxCount: 0 } })).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_OPTIONS_INVALID' }))
    await expect(t.subscribe(() => undefined, { from: 0 })).rejects.toMatchObject({ code: 'CHORUS_ERR_STATE_OFFSET_INVALID' })
    await expect(t.subscribe(() => undefined, { from: 'newest' as never })).rejects.toMatchObject({ code: 'CHORUS_ERR_STATE_OFFSET_INVALID' })
    await expect(t.subscribe(() => undefined, { group: 'no spaces' })).rejects.toMatchObject({ code: 'CHORUS_ERR_STATE_NAME_INVALID' })
    // Unknown and mistyped options are refused by name, for topics, subscriptions and maps alike.
    expect(() => a.reliableTopic('r2', { retention: { maxcount: 5 } } as never)).toThrow(
      expect.objectContaining({ code: 'CHORUS_ERR_OPTIONS_INVALID', details: { option: 'retention.maxcount' } }),
    )
    await expect(t.subscribe(() => undefined, { batchsize: 5 } as never)).rejects.toMatchObject({ code: 'CHORUS_ERR_OPTIONS_INVALID', details: { option: 'batchsize' } })
    await expect(t.subscribe(() => undefined, { pollMs: 10 })).rejects.toMatchObject({ code: 'CHORUS_ERR_OPTIONS_INVALID', details: { option: 'pollMs' } })
    expect(() => a.map('m2', { codec: {} as never })).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_OPTIONS_INVALID', details: { option: 'codec' } }))
    await expect(a.map('m3').set('k', 1, { ttl: 5 } as never)).rejects.toMatchObject({ code: 'CHORUS_ERR_OPTIONS_INVALID', details: { option: 'ttl' } })
    expect(() => a.topic('t2', { maxMessageBytes: 0 })).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_OPTIONS_INVALID', details: { option: 'maxMessageBytes' } }))
    expect(await t.head()).toBe(0)
    const [row] = await db.sql`select count(*)::int as n from reliable_topic_messages where topic = 'limits'`
    expect(row!.n).toBe(0)
  })

  it('sweeps maps, topics and sessions in one cluster-wide cron job', async () => {
    await a.map('sweep').set('k', 1, { ttlMs: 1 })
    await db.sql`insert into sessions (store, sid, data, expires_at) values ('default', 'old', '{}', now() - interval '1 second')`
    await new Promise((r) => setTimeout(r, 10))
    const result = await sweepState(a.db.sql)
    expect(Object.keys(result).sort()).toEqual(['counterShards', 'mapEntries', 'sessions', 'topicMessages'])
    const [left] = await db.sql<{ maps: number; sessions: number }[]>`
      select (select count(*)::int from map_entries where map = 'sweep') as maps,
             (select count(*)::int from sessions where sid = 'old') as sessions`
    expect(left).toEqual({ maps: 0, sessions: 0 })
    const schedules = await db.sql`select name from cron_schedules where name = ${STATE_SWEEP_CRON.name}`
    expect(schedules).toHaveLength(1)
  })
})
