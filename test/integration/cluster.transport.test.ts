// `createCluster({ transport })`: the bus is swappable. Two instances on one in-memory hub exchange
// every cluster message through it (membership notices, cache invalidations, topics) while
// PostgreSQL stays the source of truth; nothing travels by NOTIFY.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MemoryHub, MemoryTransport } from '../../src/bus/memory.js'
import type { Cluster } from '../../src/index.js'
import { isChorusError } from '../../src/errors.js'
import { eventually, member } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

describe('createCluster({ transport })', () => {
  let db: TestDatabase
  let a: Cluster
  let b: Cluster
  const hub = new MemoryHub()
  beforeAll(async () => {
    db = await testDatabase()
    a = await member(db.url, 'mem-a', { transport: new MemoryTransport(hub) })
    b = await member(db.url, 'mem-b', { transport: new MemoryTransport(hub) })
  })
  afterAll(async () => {
    await a?.close()
    await b?.close()
    await db?.drop()
  })

  it('carries topics and cache invalidations between instances over the given transport', async () => {
    const seen: string[] = []
    b.topic<string>('greetings').subscribe((m) => void seen.push(m))
    await a.topic<string>('greetings').publish('hello')
    await eventually(() => seen.includes('hello'), 'the topic message on b')
    const cb = b.cache<string>('items')
    expect(await cb.getOrLoad('k', async () => 'v')).toBe('v')
    expect(cb.has('k')).toBe(true)
    await a.cache<string>('items').delete('k')
    await eventually(() => !cb.has('k'), 'the invalidation on b')
    expect(a.bus.stats.published).toBeGreaterThan(0)
  })

  it('sends nothing by NOTIFY: the database sees no LISTEN from these instances', async () => {
    const [row] = await db.sql<{ n: number }[]>`
      select count(*)::int as n from pg_stat_activity
      where application_name like 'chorus:%:mem-%' and query ilike 'listen%'`
    expect(row!.n).toBe(0)
  })

  it('refuses something that is not a transport, naming the option', async () => {
    const err = await member(db.url, 'mem-c', { transport: { start: 1 } as never }).catch((e: unknown) => e)
    expect(isChorusError(err, 'CHORUS_ERR_OPTIONS_INVALID')).toBe(true)
    expect((err as Error).message).toContain('"transport"')
  })
})
