import { pino } from 'pino'
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest'
import { Bus } from '../../src/bus/bus.js'
import { PostgresTransport } from '../../src/bus/postgres.js'
import type { Cluster } from '../../src/cluster.js'
import { connect, type Db } from '../../src/db/connect.js'
import { parseRegistration } from '../../src/dashboard/eureka/instance.js'
import { EurekaRegistry } from '../../src/dashboard/eureka/registry.js'
import { Events } from '../../src/events.js'
import { eventually, member, record } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

const log = pino({ level: 'silent' })

function registration(app: string, instanceId: string, leaseSec: number) {
  return parseRegistration(app, { instance: { app, instanceId, hostName: `${instanceId}.test`, port: 9000, leaseInfo: { durationInSecs: leaseSec } } })
}

describe('Eureka registrations in the members table', () => {
  let db: TestDatabase
  let side: Db
  let bus: Bus
  let registry: EurekaRegistry
  const clusters: Cluster[] = []

  beforeEach(async () => {
    db = await testDatabase()
    side = await connect({ url: db.url, schema: 'chorus', instanceId: 'eureka-test', poolSize: 2 })
    bus = new Bus(new PostgresTransport({ db: side, log, payloadRetentionMs: 60_000 }), { instanceId: 'eureka-test', maxPayloadBytes: 65536, maxQueueBytes: 1 << 20, events: new Events(log), log })
    await bus.start()
    registry = new EurekaRegistry({ sql: side.sql, schema: 'chorus', bus, log })
  })

  afterEach(async () => {
    registry.close()
    await Promise.all(clusters.splice(0).map((c) => c.close()))
    await bus.close()
    await side.close()
    await db.drop()
  })

  const rows = () =>
    db.sql<{ instance_id: string; status: string; down_reason: string | null; waited_a_second_lease: boolean | null }[]>`
      select instance_id, status, down_reason, down_at >= expires_at + fail_after_ms * interval '1 millisecond' as waited_a_second_lease
      from members order by instance_id`

  it('declares a registration that stops renewing down after its lease, through a Chorus member, leaving the members alone', async () => {
    clusters.push(await member(db.url, 'a'), await member(db.url, 'b'))
    const downs = record(clusters[0]!, 'member:down')
    await registry.register(registration('ORDERS', 'o-1', 1))
    expect(await registry.renew('ORDERS', 'o-1')).toBe(true)
    const registeredAt = Date.now()
    await eventually(async () => (await rows()).find((r) => r.instance_id === 'ORDERS:o-1')?.status === 'down', 'the registration down', 10_000, 50)
    console.log(`registration with a 1 s lease declared down ${Date.now() - registeredAt} ms after its last renewal`)
    const all = await rows()
    expect(all.map((r) => [r.instance_id, r.status, r.down_reason])).toEqual([['ORDERS:o-1', 'down', 'expired'], ['a', 'up', null], ['b', 'up', null]])
    await eventually(() => downs.some((d) => d.member.instanceId === 'ORDERS:o-1' && d.reason === 'expired'), 'member:down on a', 5000)
    expect(await registry.renew('ORDERS', 'o-1')).toBe(false)
    for (const c of clusters) expect(c.members.self.state).toBe('up')
  })

  it('treats many registrations expiring at once as a burst: they are declared down only after a second lease', async () => {
    clusters.push(await member(db.url, 'a'))
    const bursts = record(clusters[0]!, 'member:burst:suspected')
    for (const id of ['o-1', 'o-2', 'o-3']) await registry.register(registration('ORDERS', id, 1))
    // One expiry for the three, whatever the time between the registrations on a busy machine.
    await db.sql`update members set expires_at = now() + interval '1 second' where instance_id like 'ORDERS:%'`
    await eventually(async () => (await rows()).filter((r) => r.status === 'down').length === 3, 'all three down', 15_000, 50)
    for (const r of (await rows()).filter((x) => x.instance_id !== 'a')) {
      expect(r.down_reason).toBe('expired')
      expect(r.waited_a_second_lease, r.instance_id).toBe(true)
    }
    expect(bursts.length).toBeGreaterThan(0)
    expect(clusters[0]!.members.self.state).toBe('up')
  })

  it('sweeps expired registrations itself when no Chorus member is alive', async () => {
    await registry.register(registration('ORDERS', 'o-1', 1))
    registry.start(100)
    await eventually(async () => (await rows())[0]?.status === 'down', 'the registration down', 10_000, 50)
    expect((await rows())[0]).toMatchObject({ instance_id: 'ORDERS:o-1', down_reason: 'expired' })
  })

  it('keeps a live registration\'s epoch on re-registration, gives a new one after it went down, and refuses a live member\'s id', async () => {
    clusters.push(await member(db.url, 'CHORUS:x'))
    await registry.register(registration('ORDERS', 'o-1', 30))
    const epoch = async () => Number((await db.sql<{ epoch: string }[]>`select epoch from members where instance_id = 'ORDERS:o-1'`)[0]!.epoch)
    const first = await epoch()
    await registry.register(registration('ORDERS', 'o-1', 30))
    expect(await epoch()).toBe(first)
    expect(await registry.cancel('ORDERS', 'o-1')).toBe(true)
    await registry.register(registration('ORDERS', 'o-1', 30))
    expect(await epoch()).toBeGreaterThan(first)
    await expect(registry.register(registration('ORDERS', 'CHORUS:x', 30))).rejects.toMatchObject({ code: 'CHORUS_ERR_DASHBOARD_EUREKA_CONFLICT' })
    const events = await db.sql<{ instance_id: string; kind: string; reason: string | null; eureka: boolean }[]>`
      select instance_id, kind, reason, eureka from member_events where instance_id = 'ORDERS:o-1' order by id`
    expect(events.map((e) => [e.kind, e.reason, e.eureka])).toEqual([['joined', null, true], ['down', 'left', true], ['joined', null, true]])
  })

  const chorusInstances = async () => (await registry.applications()).find((a) => a.name === 'CHORUS')?.instances.map((e) => e.stored.instanceId) ?? []

  it('refuses the reserved application name and the instance id of a live member (any case); a member that left frees its id', async () => {
    const live = await member(db.url, 'instance-1', { advertiseUrl: 'http://127.0.0.1:9' })
    clusters.push(live)
    await expect(registry.register(registration('CHORUS', 'instance-1', 30))).rejects.toMatchObject({ code: 'CHORUS_ERR_DASHBOARD_EUREKA_RESERVED', status: 409 })
    await expect(registry.register(registration('CHORUS', 'elsewhere', 30))).rejects.toMatchObject({ code: 'CHORUS_ERR_DASHBOARD_EUREKA_RESERVED' })
    for (const id of ['instance-1', 'INSTANCE-1']) {
      await expect(registry.register(registration('ORDERS', id, 30))).rejects.toMatchObject({ code: 'CHORUS_ERR_DASHBOARD_EUREKA_CONFLICT', status: 409, message: expect.stringContaining('instance-1') })
    }
    expect(await chorusInstances()).toEqual(['instance-1'])
    expect((await db.sql`select 1 from members where metadata ? 'eureka'`).length).toBe(0)
    await live.close()
    clusters.splice(0)
    await registry.register(registration('ORDERS', 'instance-1', 30))
    expect((await registry.applications()).find((a) => a.name === 'ORDERS')?.instances.map((e) => e.stored.instanceId)).toEqual(['instance-1'])
  })

  it('never lets a registration made before a member (re)joined shadow it in the Eureka views', async () => {
    await registry.register(registration('ORDERS', 'instance-2', 30))
    clusters.push(await member(db.url, 'instance-2', { advertiseUrl: 'http://127.0.0.1:9' }))
    const apps = await registry.applications()
    expect(apps.flatMap((a) => a.instances.map((e) => `${a.name}/${e.stored.instanceId}`))).toEqual(['CHORUS/instance-2'])
  })
})

describe('the membership log', () => {
  let db: TestDatabase
  afterAll(async () => {
    await db?.drop()
  })

  it('records joined, draining, down (left) and a later join, from every writer', async () => {
    db = await testDatabase()
    const a = await member(db.url, 'a')
    await a.drain()
    await a.close()
    const again = await member(db.url, 'a')
    await again.close()
    const events = await db.sql<{ kind: string; status: string; reason: string | null }[]>`select kind, status, reason from member_events where instance_id = 'a' order by id`
    expect(events.map((e) => [e.kind, e.status, e.reason])).toEqual([
      ['joined', 'up', null],
      ['draining', 'draining', null],
      ['down', 'down', 'left'],
      ['joined', 'up', null],
      ['draining', 'draining', null],
      ['down', 'down', 'left'],
    ])
  })
})
