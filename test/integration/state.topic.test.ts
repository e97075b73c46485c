import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Cluster } from '../../src/cluster.js'
import type { TopicMessageMeta } from '../../src/index.js'
import { eventually, member } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

describe('topics', () => {
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

  it('delivers typed messages to subscribers on every instance, in publish order', async () => {
    const atA: { m: { n: number }; meta: TopicMessageMeta }[] = []
    const atB: { m: { n: number }; meta: TopicMessageMeta }[] = []
    const offA = a.topic<{ n: number }>('news').subscribe((m, meta) => void atA.push({ m, meta }))
    const offB = b.topic<{ n: number }>('news').subscribe((m, meta) => void atB.push({ m, meta }))
    for (let n = 0; n < 50; n++) await a.topic<{ n: number }>('news').publish({ n })
    await eventually(() => atA.length === 50 && atB.length === 50, 'fifty messages at both instances')
    expect(atB.map((x) => x.m.n)).toEqual(Array.from({ length: 50 }, (_, i) => i))
    expect(atB.every((x) => !x.meta.local)).toBe(true)
    expect(atA.every((x) => x.meta.local)).toBe(true)
    offA()
    offB()
  })

  it('stops delivering after unsubscribe, and keeps topics apart', async () => {
    const got: string[] = []
    const off = b.topic<string>('one').subscribe((m) => void got.push(m))
    const other: string[] = []
    const offOther = b.topic<string>('two').subscribe((m) => void other.push(m))
    await a.topic<string>('one').publish('first')
    await eventually(() => got.length === 1, 'the first message')
    off()
    await a.topic<string>('one').publish('second')
    await a.topic<string>('two').publish('marker')
    await eventually(() => other.length === 1, 'the marker on the other topic')
    expect(got).toEqual(['first'])
    offOther()
  })

  it('tells subscribers about a gap when the LISTEN connection is terminated, and goes on delivering', async () => {
    const gaps: string[] = []
    const got: string[] = []
    const offGap = b.topic('alerts').onGap((g) => void gaps.push(g.reason))
    const off = b.topic<string>('alerts').subscribe((m) => void got.push(m))
    const [listen] = await db.sql<{ pid: number }[]>`select pid from pg_stat_activity where datname = current_database() and application_name = 'chorus:listen:b'`
    await db.sql`select pg_terminate_backend(${listen!.pid})`
    await eventually(() => gaps.includes('reconnect'), `the reconnect gap notice (saw ${JSON.stringify(gaps)})`, 15_000)
    await eventually(async () => {
      await a.topic<string>('alerts').publish('after')
      return got.includes('after')
    }, 'a message after the reconnect', 15_000, 200)
    off()
    offGap()
  })

  it('refuses oversized, unserialisable and badly named messages with typed errors', async () => {
    const t = a.topic('limits', { maxMessageBytes: 50 })
    await expect(t.publish('x'.repeat(100))).rejects.toMatchObject({ code: 'CHORUS_ERR_STATE_VALUE_TOO_LARGE' })
    await expect(t.publish(1n as never)).rejects.toMatchObject({ code: 'CHORUS_ERR_STATE_VALUE_NOT_SERIALIZABLE' })
    expect(() => a.topic('')).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_STATE_NAME_INVALID' }))
    expect(() => a.topic('has space')).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_STATE_NAME_INVALID' }))
  })
})
