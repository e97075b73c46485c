// Membership's reader, as the balancer, the dashboard and `chorus nginx --watch` use it: real
// members on real PostgreSQL, a watcher process's own foundation from the assembly point.
import { pino } from 'pino'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { assemble, type Foundation } from '../../src/assembly.js'
import type { Cluster } from '../../src/cluster.js'
import { Events } from '../../src/events.js'
import { MembershipReader, type WatchedMember } from '../../src/membership/reader.js'
import { eventually, member } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

const log = pino({ level: 'silent' })

describe('the membership reader', () => {
  let db: TestDatabase
  let foundation: Foundation
  let reader: MembershipReader
  const clusters: Cluster[] = []

  beforeEach(async () => {
    db = await testDatabase()
    const events = new Events(log)
    foundation = await assemble({ instanceId: 'reader-test', databaseUrl: db.url, directUrl: null, schema: 'chorus', poolSize: 2, migrate: false, log, events })
    // A long poll: what the test sees must come from the members channel, not from polling.
    reader = new MembershipReader({ sql: foundation.db.sql, schema: 'chorus', bus: foundation.bus, events, log, pollMs: 60_000 })
  })

  afterEach(async () => {
    reader.close()
    await Promise.all(clusters.splice(0).map((c) => c.close()))
    await foundation.close()
    await db.drop()
  })

  const state = (members: readonly WatchedMember[]) => members.map((m) => [m.instanceId, m.status, m.downReason])

  it('follows joins, drains and leaves as members announce them, without polling, and keeps the departed for the dashboard', async () => {
    await reader.start()
    expect(reader.members).toEqual([])
    const changes: string[][][] = []
    reader.onChange((members) => void changes.push(state(members) as string[][]))
    clusters.push(await member(db.url, 'a', { advertiseUrl: 'http://127.0.0.1:9001' }), await member(db.url, 'b'))
    await eventually(() => reader.live().length === 2, 'both members live in the reader')
    expect(reader.routable().map((m) => m.instanceId)).toEqual(['a'])
    await clusters[0]!.members.drain()
    await eventually(() => reader.members.find((m) => m.instanceId === 'a')?.status === 'draining', 'a draining in the reader')
    await clusters.splice(1, 1)[0]!.close()
    await eventually(() => reader.members.find((m) => m.instanceId === 'b')?.status === 'down', 'b down in the reader')
    expect(state(reader.members)).toEqual([['a', 'draining', null], ['b', 'down', 'left']])
    expect(reader.live().map((m) => m.instanceId)).toEqual(['a'])
    expect(changes.at(-1)).toEqual(state(reader.members))
  })

  it('leaves a member whose lease ran out out of the routable set before anyone declares it down', async () => {
    clusters.push(await member(db.url, 'a', { advertiseUrl: 'http://127.0.0.1:9001' }))
    await reader.start()
    expect(reader.routable().map((m) => m.instanceId)).toEqual(['a'])
    // The row's lease ends as if the instance had stopped renewing; nobody is left to declare it down.
    clusters[0]!.members.abandon()
    await db.sql`update members set expires_at = now() - interval '1 second' where instance_id = 'a'`
    await reader.refresh()
    expect(reader.live().map((m) => [m.instanceId, m.expired])).toEqual([['a', true]])
    expect(reader.routable()).toEqual([])
  })
})
