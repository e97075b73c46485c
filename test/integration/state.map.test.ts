import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Cluster } from '../../src/index.js'
import { sweepExpired } from '../../src/state/map.js'
import { member } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

describe('shared map', () => {
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

  it('shares values between instances, with versions', async () => {
    const ma = a.map<{ on: boolean }>('flags')
    const mb = b.map<{ on: boolean }>('flags')
    expect(await ma.set('dark-mode', { on: true })).toBe(1)
    expect(await mb.get('dark-mode')).toEqual({ on: true })
    expect(await mb.set('dark-mode', { on: false })).toBe(2)
    expect(await ma.getEntry('dark-mode')).toEqual({ key: 'dark-mode', value: { on: false }, version: 2 })
    expect(await ma.delete('dark-mode')).toBe(true)
    expect(await mb.get('dark-mode')).toBeUndefined()
    expect(await ma.delete('dark-mode')).toBe(false)
  })

  it('gives compareAndSet exactly one winner per version', async () => {
    const m = a.map<number>('cas')
    expect(await m.compareAndSet('k', null, 0)).toBe(1)
    expect(await m.compareAndSet('k', null, 0)).toBeNull()
    const racers = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).map<number>('cas').compareAndSet('k', 1, i)))
    expect(racers.filter((v) => v === 2)).toHaveLength(1)
    expect(racers.filter((v) => v === null)).toHaveLength(9)
  })

  it('increments atomically under concurrency', async () => {
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 2 ? a : b).map('counters').increment('hits')))
    expect(new Set(results).size).toBe(200)
    expect(await a.map('counters').get('hits')).toBe(200)
    await a.map('counters').set('text', 'abc')
    await expect(a.map('counters').increment('text')).rejects.toMatchObject({ code: 'CHORUS_ERR_STATE_NOT_A_NUMBER' })
  })

  it('expires entries on read and sweeps them', async () => {
    const m = a.map<string>('ttl')
    await m.set('short', 'x', { ttlMs: 50 })
    await m.set('long', 'y')
    await new Promise((r) => setTimeout(r, 120))
    expect(await m.get('short')).toBeUndefined()
    expect((await m.entries()).map((e) => e.key)).toEqual(['long'])
    // The cluster-wide sweep may have run first; either way the expired row is gone after this.
    await sweepExpired(a.db.sql)
    const [row] = await db.sql`select count(*)::int as n from map_entries where map = 'ttl'`
    expect(row!.n).toBe(1)
  })

  it('lists entries by prefix, escaping LIKE wildcards', async () => {
    const m = a.map<number>('list')
    for (const k of ['user:1', 'user:2', 'user_x', 'other']) await m.set(k, 1)
    expect((await m.entries({ prefix: 'user:' })).map((e) => e.key)).toEqual(['user:1', 'user:2'])
    expect((await m.entries({ prefix: 'user_' })).map((e) => e.key)).toEqual(['user_x'])
  })

  it('announces changes to watchers on other instances', async () => {
    const seen: unknown[] = []
    const off = b.map('watched').watch((c) => seen.push(c))
    await a.map('watched').set('k', 1)
    await a.map('watched').delete('k')
    const end = Date.now() + 5000
    while (seen.length < 2 && Date.now() < end) await new Promise((r) => setTimeout(r, 10))
    off()
    expect(seen).toEqual([{ key: 'k', op: 'set', version: 1 }, { key: 'k', op: 'delete' }])
  })

  it('refuses oversized, unserialisable and badly named input, writing nothing', async () => {
    const m = a.map('limits', { maxValueBytes: 100 })
    await expect(m.set('big', 'x'.repeat(200))).rejects.toMatchObject({ code: 'CHORUS_ERR_STATE_VALUE_TOO_LARGE' })
    await expect(m.set('bigint', 10n as never)).rejects.toMatchObject({ code: 'CHORUS_ERR_STATE_VALUE_NOT_SERIALIZABLE' })
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    await expect(m.set('cycle', cyclic)).rejects.toMatchObject({ code: 'CHORUS_ERR_STATE_VALUE_NOT_SERIALIZABLE' })
    await expect(m.set('fn', (() => 1) as never)).rejects.toMatchObject({ code: 'CHORUS_ERR_STATE_VALUE_NOT_SERIALIZABLE' })
    await expect(m.set('', 1)).rejects.toMatchObject({ code: 'CHORUS_ERR_STATE_KEY_INVALID' })
    expect(() => a.map('bad name')).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_STATE_NAME_INVALID' }))
    const [row] = await db.sql`select count(*)::int as n from map_entries where map = 'limits'`
    expect(row!.n).toBe(0)
  })
})
