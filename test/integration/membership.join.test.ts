import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Cluster } from '../../src/cluster.js'
import { ChorusError } from '../../src/errors.js'
import { eventually, member, record } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

describe('membership: joining and leaving', () => {
  let db: TestDatabase
  const clusters: Cluster[] = []
  const join = async (id: string, extra = {}) => {
    const c = await member(db.url, id, extra)
    clusters.push(c)
    return c
  }

  beforeEach(async () => {
    db = await testDatabase()
  })
  afterEach(async () => {
    await Promise.all(clusters.splice(0).map((c) => c.close()))
    await db.drop()
  })

  it('lists every live member on every member, with its url, roles and metadata', async () => {
    const a = await join('a', { advertiseUrl: 'http://127.0.0.1:9001', roles: ['scheduling'], metadata: { zone: 'z1' } })
    const b = await join('b')
    await eventually(() => a.members.list().length === 2, 'a to see b')
    for (const c of [a, b]) {
      expect(c.members.list().map((m) => [m.instanceId, m.status])).toEqual([
        ['a', 'up'],
        ['b', 'up'],
      ])
    }
    const seenByB = b.members.get('a')!
    expect(seenByB).toMatchObject({ advertiseUrl: 'http://127.0.0.1:9001', roles: ['scheduling'], metadata: { zone: 'z1' }, pid: process.pid })
    expect(seenByB.epoch).toBe(a.members.self.epoch)
    expect(a.members.self).toMatchObject({ instanceId: 'a', state: 'up' })
  })

  it('refuses a second live instance with the same id with CHORUS_ERR_MEMBERSHIP_DUPLICATE_ID, leaving the first untouched', async () => {
    const first = await join('same')
    const epoch = first.members.self.epoch
    let err: unknown
    try {
      clusters.push(await member(db.url, 'same'))
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(ChorusError)
    expect((err as ChorusError).code).toBe('CHORUS_ERR_MEMBERSHIP_DUPLICATE_ID')
    expect((err as ChorusError).details.instanceId).toBe('same')
    expect((err as ChorusError).message).toContain('"same"')
    const rows = await db.sql<{ epoch: string; status: string; pid: number }[]>`select epoch, status, pid from members where instance_id = 'same'`
    expect(rows).toEqual([{ epoch: String(epoch), status: 'up', pid: process.pid }])
    expect(first.members.self.state).toBe('up')
    expect(first.members.signal.aborted).toBe(false)
  })

  it('on graceful close, peers emit member:down with reason left (not an expiry), and the id can join again with a new epoch', async () => {
    const a = await join('a')
    const b = await join('b')
    await eventually(() => a.members.isLive('b'), 'a to see b')
    const downs = record(a, 'member:down')
    const signal = b.members.signal
    const oldEpoch = b.members.self.epoch
    await b.close()
    expect(signal.aborted).toBe(true)
    await eventually(() => downs.length > 0, 'member:down at a')
    expect(downs.map((d) => [d.member.instanceId, d.reason])).toEqual([['b', 'left']])
    expect(a.members.list().map((m) => m.instanceId)).toEqual(['a'])
    const [row] = await db.sql<{ status: string; down_reason: string }[]>`select status, down_reason from members where instance_id = 'b'`
    expect(row).toEqual({ status: 'down', down_reason: 'left' })

    const ups = record(a, 'member:up')
    const again = await join('b')
    expect(again.members.self.epoch).toBeGreaterThan(oldEpoch)
    await eventually(() => ups.some((u) => u.member.instanceId === 'b'), 'member:up for b again')
    expect(a.members.get('b')!.epoch).toBe(again.members.self.epoch)
  })

  it('shows a draining member as draining to its peers, and still live', async () => {
    const a = await join('a')
    const b = await join('b')
    await eventually(() => a.members.isLive('b'), 'a to see b')
    const draining = record(a, 'member:draining')
    await b.drain()
    await eventually(() => draining.length === 1, 'member:draining at a')
    expect(draining[0]!.member.instanceId).toBe('b')
    expect(a.members.get('b')!.status).toBe('draining')
    expect(a.members.isLive('b')).toBe(true)
    expect(b.members.signal.aborted).toBe(false)
  })

  it('gives each start a fresh, larger epoch', async () => {
    const a = await join('a')
    const b = await join('b')
    expect(b.members.self.epoch).toBeGreaterThan(a.members.self.epoch)
  })
})
