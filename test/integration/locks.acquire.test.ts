import { performance } from 'node:perf_hooks'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Cluster } from '../../src/cluster.js'
import { ChorusError, isChorusError } from '../../src/errors.js'
import { lockStatus } from '../../src/locks/status.js'
import { WAKE_CHANNEL } from '../../src/locks/wakeups.js'
import { eventually, member, record } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

/** Resolves with the error `p` rejects with; fails if it resolves. */
async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p
  } catch (err) {
    return err
  }
  throw new Error('expected a rejection')
}

describe('locks: acquire, tryAcquire, withLock', () => {
  let db: TestDatabase
  let a: Cluster
  let b: Cluster
  let c: Cluster

  beforeAll(async () => {
    db = await testDatabase()
    ;[a, b, c] = await Promise.all([member(db.url, 'a'), member(db.url, 'b'), member(db.url, 'c')])
  })
  afterAll(async () => {
    await Promise.all([a, b, c].map((x) => x?.close()))
    await db.drop()
  })

  it('gives an exclusive lock to one instance at a time, with a larger token each time', async () => {
    const first = await a.locks.acquire('ex')
    expect(first.mode).toBe('exclusive')
    expect(first.name).toBe('ex')
    expect(first.path).toBe(false)
    expect(typeof first.token).toBe('bigint')
    expect(first.signal.aborted).toBe(false)
    expect(await b.locks.tryAcquire('ex')).toBeNull()
    expect(await b.locks.tryAcquire('ex', { mode: 'shared' })).toBeNull()
    await first.release()
    expect(first.signal.aborted).toBe(true)
    expect(isChorusError(first.signal.reason, 'CHORUS_ERR_LOCK_RELEASED')).toBe(true)
    const second = await b.locks.tryAcquire('ex')
    expect(second).not.toBeNull()
    expect(second!.token).toBeGreaterThan(first.token)
    await second!.release()
    await second!.release() // twice is fine
  })

  it('lets shared holders overlap each other but not an exclusive holder', async () => {
    const s1 = await a.locks.acquire('sh', { mode: 'shared' })
    const s2 = await b.locks.acquire('sh', { mode: 'shared' })
    expect(s2.token).toBeGreaterThan(s1.token)
    expect(await c.locks.tryAcquire('sh')).toBeNull()
    let granted = false
    const exclusive = c.locks.acquire('sh').then((l) => ((granted = true), l))
    await s1.release()
    await new Promise((r) => setTimeout(r, 100))
    expect(granted).toBe(false)
    await s2.release()
    const x = await exclusive
    expect(x.token).toBeGreaterThan(s2.token)
    expect(await a.locks.tryAcquire('sh', { mode: 'shared' })).toBeNull()
    await x.release()
  })

  it('wakes a waiter through the bus when the holder releases', async () => {
    const wakes: string[] = []
    b.bus.subscribe(WAKE_CHANNEL, (data, meta) => {
      if (!meta.local) wakes.push(data)
    })
    const held = await a.locks.acquire('wake')
    const waiting = b.locks.acquire('wake')
    await eventually(async () => (await lockStatus(db.sql)).waiters === 1, 'the waiter to queue')
    const releasedAt = performance.now()
    await held.release()
    const got = await waiting
    const ms = performance.now() - releasedAt
    console.log(`release → waiter on another instance granted after ${ms.toFixed(1)} ms`)
    expect(wakes).toContain(JSON.stringify([0, ['wake']]))
    expect(got.token).toBeGreaterThan(held.token)
    await got.release()
  })

  it('serves waiters in arrival order', async () => {
    const held = await a.locks.acquire('queue')
    const order: string[] = []
    const bWaits = b.locks.acquire('queue').then((l) => (order.push('b'), l))
    await eventually(async () => (await lockStatus(db.sql)).waiters === 1, 'b to queue')
    const cWaits = c.locks.acquire('queue').then((l) => (order.push('c'), l))
    await eventually(async () => (await lockStatus(db.sql)).waiters === 2, 'c to queue')
    // A newcomer does not jump the queue either.
    expect(await a.locks.tryAcquire('queue')).toBeNull()
    await held.release()
    const bl = await bWaits
    expect(order).toEqual(['b'])
    await bl.release()
    const cl = await cWaits
    expect(order).toEqual(['b', 'c'])
    expect(cl.token).toBeGreaterThan(bl.token)
    await cl.release()
  })

  it('fails with CHORUS_ERR_LOCK_TIMEOUT after waitMs and leaves nothing behind', async () => {
    const held = await a.locks.acquire('slow')
    const err = await rejection(b.locks.acquire('slow', { waitMs: 200 }))
    expect(isChorusError(err, 'CHORUS_ERR_LOCK_TIMEOUT')).toBe(true)
    expect((err as ChorusError).status).toBe(409)
    const zero = await rejection(b.locks.acquire('slow', { waitMs: 0 }))
    expect(isChorusError(zero, 'CHORUS_ERR_LOCK_TIMEOUT')).toBe(true)
    await eventually(async () => (await lockStatus(db.sql)).waiters === 0, 'the waiter rows to go')
    expect(b.locks.waiting).toBe(0)
    await held.release()
    const after = await b.locks.tryAcquire('slow')
    expect(after).not.toBeNull()
    await after!.release()
  })

  it("stops waiting when the caller's signal aborts, with the signal's reason", async () => {
    const held = await a.locks.acquire('abort')
    const ac = new AbortController()
    const waiting = b.locks.acquire('abort', { signal: ac.signal })
    await eventually(async () => (await lockStatus(db.sql)).waiters === 1, 'the waiter to queue')
    const reason = new Error('user went away')
    ac.abort(reason)
    expect(await rejection(waiting)).toBe(reason)
    expect(await rejection(b.locks.acquire('abort', { signal: AbortSignal.abort(reason) }))).toBe(reason)
    expect(await rejection(b.locks.tryAcquire('free-name', { signal: AbortSignal.abort(reason) }))).toBe(reason)
    await eventually(async () => (await lockStatus(db.sql)).waiters === 0, 'the waiter rows to go')
    await held.release()
  })

  it('rejects bad names and options with typed errors, and takes nothing', async () => {
    const badNames: unknown[] = ['', 'a\u0000b', 'x'.repeat(513), 42, null, undefined]
    for (const name of badNames) {
      const err = await rejection(a.locks.acquire(name as string))
      expect(isChorusError(err, 'CHORUS_ERR_LOCK_NAME_INVALID'), String(name)).toBe(true)
      expect((err as ChorusError).status).toBe(400)
      expect(isChorusError(await rejection(a.locks.tryAcquire(name as string)), 'CHORUS_ERR_LOCK_NAME_INVALID')).toBe(true)
    }
    const badOptions: [string, object][] = [
      ['mode', { mode: 'reader' }],
      ['waitMs', { waitMs: -1 }],
      ['waitMs', { waitMs: Number.NaN }],
      ['ttlMs', { ttlMs: 0 }],
      ['ttlMs', { ttlMs: 1.5 }],
      ['signal', { signal: 'stop' }],
    ]
    for (const [option, opts] of badOptions) {
      const err = await rejection(a.locks.acquire('fine', opts))
      expect(isChorusError(err, 'CHORUS_ERR_LOCK_OPTIONS_INVALID'), option).toBe(true)
      expect((err as ChorusError).details.option).toBe(option)
    }
    expect((await lockStatus(db.sql)).held).toBe(0)
  })

  it("aborts the lock's signal when its TTL passes, and frees the lease for others", async () => {
    const lost = record(a, 'lock:lost')
    const lock = await a.locks.acquire('ttl', { ttlMs: 300 })
    const waiting = b.locks.acquire('ttl')
    const reason = await new Promise<unknown>((resolve) => lock.signal.addEventListener('abort', () => resolve(lock.signal.reason), { once: true }))
    expect(isChorusError(reason, 'CHORUS_ERR_LOCK_LOST')).toBe(true)
    expect((reason as ChorusError).details.reason).toBe('ttl')
    expect(lost.map((l) => l.reason)).toEqual(['ttl'])
    const next = await waiting
    expect(next.token).toBeGreaterThan(lock.token)
    await next.release()
  })

  it('frees a TTL lease on database time even when its holder never gives it back', async () => {
    const lock = await a.locks.acquire('ttl-db', { ttlMs: 60_000 })
    // Move the expiry into the past, as if the holder had stopped without its timer firing.
    await db.sql`update lock_leases set expires_at = now() - interval '1 second' where name = 'ttl-db'`
    const taken = await b.locks.tryAcquire('ttl-db')
    expect(taken).not.toBeNull()
    expect(taken!.token).toBeGreaterThan(lock.token)
    await taken!.release()
    await lock.release()
  })

  it('is not reentrant: the holder asking again is refused like anyone else', async () => {
    const lock = await a.locks.acquire('again')
    expect(await a.locks.tryAcquire('again')).toBeNull()
    const err = await rejection(a.locks.acquire('again', { waitMs: 100 }))
    expect(isChorusError(err, 'CHORUS_ERR_LOCK_TIMEOUT')).toBe(true)
    await lock.release()
  })

  it('withLock releases the lock however the function ends', async () => {
    const value = await a.locks.withLock('with', async (lock) => {
      expect(await b.locks.tryAcquire('with')).toBeNull()
      return lock.token
    })
    expect(typeof value).toBe('bigint')
    const boom = new Error('boom')
    expect(await rejection(a.locks.withLock('with', () => Promise.reject(boom)))).toBe(boom)
    const free = await b.locks.tryAcquire('with')
    expect(free).not.toBeNull()
    await free!.release()
  })

  it('keeps tokens increasing when the unlogged lock tables are emptied, as by a database crash', async () => {
    const before = await a.locks.acquire('fenced')
    await before.release()
    await db.sql`truncate lock_state, lock_leases, lock_waiters`
    const after = await a.locks.acquire('fenced')
    expect(after.token).toBeGreaterThan(before.token)
    await after.release()
  })

  it('frees at once a lease whose holder is declared down, and aborts the holder\u2019s signal', async () => {
    const d = await member(db.url, 'd')
    try {
      const lock = await d.locks.acquire('dead')
      const waiting = b.locks.acquire('dead')
      await eventually(async () => (await lockStatus(db.sql)).waiters === 1, 'the waiter to queue')
      // What a peer does when d's heartbeat expires.
      await db.sql`update members set status = 'down', down_at = now(), down_reason = 'expired' where instance_id = 'd'`
      const got = await waiting
      expect(got.token).toBeGreaterThan(lock.token)
      await eventually(() => lock.signal.aborted, "d's lock signal to abort")
      expect(isChorusError(lock.signal.reason, 'CHORUS_ERR_LOCK_LOST')).toBe(true)
      await got.release()
    } finally {
      await d.close()
    }
  })

  it('releases every lease on close', async () => {
    const e = await member(db.url, 'e')
    const l1 = await e.locks.acquire('close-1')
    const l2 = await e.locks.path('close/2', 'shared')
    expect((await lockStatus(db.sql)).held).toBeGreaterThanOrEqual(2)
    const waiting = a.locks.acquire('close-1')
    await e.close()
    expect(l1.signal.aborted && l2.signal.aborted).toBe(true)
    expect(isChorusError(l1.signal.reason, 'CHORUS_ERR_CLUSTER_CLOSED')).toBe(true)
    const got = await waiting
    await got.release()
    const status = await lockStatus(db.sql)
    expect(status.leases.filter((l) => l.holder === 'e')).toEqual([])
    expect(isChorusError(await rejection(e.locks.acquire('x')), 'CHORUS_ERR_CLUSTER_CLOSED')).toBe(true)
  })

  it('reports held locks and waiters in lockStatus', async () => {
    const x = await a.locks.acquire('status-x', { ttlMs: 60_000 })
    const s = await b.locks.path('status/s', 'shared')
    const waiting = c.locks.acquire('status-x')
    await eventually(async () => (await lockStatus(db.sql)).waiters === 1, 'the waiter to queue')
    const status = await lockStatus(db.sql)
    expect(status).toMatchObject({ held: 2, exclusive: 1, shared: 1, waiters: 1 })
    const byName = new Map(status.leases.map((l) => [l.name, l]))
    expect(byName.get('status-x')).toMatchObject({ holder: 'a', mode: 'exclusive', path: false, token: x.token.toString(), live: true })
    expect(byName.get('status-x')!.expiresAt).toBeInstanceOf(Date)
    expect(byName.get('status/s')).toMatchObject({ holder: 'b', mode: 'shared', path: true, expiresAt: null })
    await x.release()
    await (await waiting).release()
    await s.release()
    expect(await lockStatus(db.sql)).toMatchObject({ held: 0, waiters: 0 })
  })
})
