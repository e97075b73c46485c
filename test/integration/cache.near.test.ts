import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Cluster } from '../../src/index.js'
import { eventually, member } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

const until = (check: () => boolean, ms = 5000) => eventually(check, 'the cache to change', ms, 10)

describe('near cache', () => {
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

  it('serves the new value on A after B writes and invalidates', async () => {
    const source = new Map<string, string>([['k', 'v1']])
    const load = async (key: string) => source.get(key)!
    const ca = a.cache<string>('items', { load })
    const cb = b.cache<string>('items', { load })
    expect(await ca.getOrLoad('k')).toBe('v1')
    expect(ca.get('k')).toBe('v1')
    source.set('k', 'v2')
    await cb.set('k', 'v2')
    await until(() => !ca.has('k'))
    expect(await ca.getOrLoad('k')).toBe('v2')
  })

  it('does not keep a load that an invalidation overtook', async () => {
    let release!: (v: string) => void
    const ca = a.cache<string>('race')
    const cb = b.cache<string>('race')
    const loading = ca.getOrLoad('k', () => new Promise<string>((r) => (release = r)))
    await cb.delete('k')
    await until(() => ca.stats.invalidations > 0)
    release('old')
    expect(await loading).toBe('old')
    expect(ca.has('k')).toBe(false)
    expect(ca.stats.staleLoads).toBe(1)
  })

  it('loads once for concurrent callers', async () => {
    let calls = 0
    const c = a.cache<number>('single', {
      load: async () => {
        calls++
        await new Promise((r) => setTimeout(r, 20))
        return 42
      },
    })
    const values = await Promise.all(Array.from({ length: 20 }, () => c.getOrLoad('x')))
    expect(values.every((v) => v === 42)).toBe(true)
    expect(calls).toBe(1)
  })

  it('flushes every cache of an instance when its bus reports a gap', async () => {
    const ca = a.cache<string>('gap')
    await ca.set('k', 'v')
    expect(ca.get('k')).toBe('v')
    const listen = (await db.sql<{ pid: number }[]>`select pid from pg_stat_activity where datname = current_database() and application_name = 'chorus:listen:a'`)[0]!
    await db.sql`select pg_terminate_backend(${listen.pid})`
    await until(() => ca.stats.flushes > 0, 15_000)
    expect(ca.has('k')).toBe(false)
  })

  it('caches null as a value (negative caching): a loader returning null runs once', async () => {
    let calls = 0
    const c = a.cache<string | null>('negative', {
      load: async () => {
        calls++
        return null
      },
    })
    expect(await c.getOrLoad('missing')).toBeNull()
    expect(await c.getOrLoad('missing')).toBeNull()
    expect(calls).toBe(1)
    expect(c.has('missing')).toBe(true)
    expect(c.get('missing')).toBeNull()
    expect(c.get('never-loaded')).toBeUndefined()
  })

  it('keeps a set(k, null) and invalidates it on every peer', async () => {
    const ca = a.cache<number | null>('negative-set')
    const cb = b.cache<number | null>('negative-set')
    const heard = ca.stats.invalidations
    await cb.set('k', 7)
    // b's invalidation must have reached a first, or it would (rightly) drop a's newer entry.
    await until(() => ca.stats.invalidations > heard)
    await ca.set('k', null)
    expect(ca.get('k')).toBeNull()
    await until(() => !cb.has('k'))
    expect(await cb.getOrLoad('k', async () => null)).toBeNull()
    expect(cb.get('k')).toBeNull()
    await ca.set('k', 8)
    await until(() => !cb.has('k'))
  })

  it('treats undefined as not found: set refuses it, a loader returning it is not kept', async () => {
    const c = a.cache<string | null>('undefined')
    await expect(c.set('k', undefined as unknown as null)).rejects.toMatchObject({ code: 'CHORUS_ERR_STATE_VALUE_NOT_SERIALIZABLE' })
    let calls = 0
    const load = async () => {
      calls++
      return undefined as unknown as string
    }
    expect(await c.getOrLoad('k', load)).toBeUndefined()
    expect(await c.getOrLoad('k', load)).toBeUndefined()
    expect(calls).toBe(2)
    expect(c.has('k')).toBe(false)
  })

  it('refuses bad names and keys with typed errors', async () => {
    expect(() => a.cache('')).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_STATE_NAME_INVALID' }))
    expect(() => a.cache('a b')).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_STATE_NAME_INVALID' }))
    await expect(a.cache('ok').set('', 'v')).rejects.toMatchObject({ code: 'CHORUS_ERR_STATE_KEY_INVALID' })
  })
})
