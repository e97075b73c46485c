import postgres from 'postgres'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Cluster } from '../../src/cluster.js'
import { eventually, member, record } from '../helpers/cluster.js'
import { serverUrl, testDatabase, type TestDatabase } from '../helpers/db.js'
import { startProxy } from '../helpers/proxy.js'

async function dropRole(role: string): Promise<void> {
  const admin = postgres(serverUrl(), { max: 1, onnotice: () => undefined })
  await admin.unsafe(`drop role if exists ${role}`).catch(() => undefined)
  await admin.end()
}

describe('membership: self-fencing', () => {
  let db: TestDatabase
  const clusters: Cluster[] = []
  const roles: string[] = []

  beforeEach(async () => {
    db = await testDatabase()
  })
  afterEach(async () => {
    await Promise.all(clusters.splice(0).map((c) => c.close()))
    await db.drop()
    for (const role of roles.splice(0)) await dropRole(role)
  })

  /**
   * Cuts `instanceId` off the database for `ms`: its role may no longer log in, and every backend it
   * has (work pool, control, LISTEN) is terminated every ~50 ms. Terminating alone does not cut an
   * instance off: it reconnects within milliseconds and its heartbeat gets through between kills.
   */
  async function cutOff(instanceId: string, role: string, ms: number): Promise<number> {
    await db.sql.unsafe(`alter role ${role} nologin`)
    const until = Date.now() + ms
    let killed = 0
    try {
      while (Date.now() < until) {
        const rows = await db.sql<{ ok: boolean }[]>`
          select pg_terminate_backend(pid) as ok from pg_stat_activity
          where datname = current_database() and application_name like ${`chorus:%:${instanceId}`}`
        killed += rows.filter((r) => r.ok).length
        await new Promise((r) => setTimeout(r, 50))
      }
    } finally {
      await db.sql.unsafe(`alter role ${role} login`)
    }
    return killed
  }

  /** A login role of its own for one instance, so that it alone can be kept from connecting. */
  async function roleFor(instanceId: string): Promise<{ role: string; url: string }> {
    const role = `${db.name}_${instanceId}`
    const password = 'pw-' + role
    await db.sql.unsafe(`create role ${role} login superuser password '${password}'`)
    roles.push(role)
    const url = new URL(db.url)
    url.username = role
    url.password = password
    return { role, url: url.toString() }
  }

  /** Joins `victim` (on `victimUrl`) and a peer, cuts the victim off with `cut`, and checks fencing and rejoin. */
  async function fencedAndRejoined(victimUrl: string, cut: () => Promise<string>): Promise<void> {
    const victim = await member(victimUrl, 'victim')
    const peer = await member(db.url, 'peer')
    clusters.push(victim, peer)
    await eventually(() => peer.members.isLive('victim') && victim.members.isLive('peer'), 'the two to see each other')

    const firstEpoch = victim.members.self.epoch
    const signal = victim.members.signal
    let abortedAt = 0
    signal.addEventListener('abort', () => (abortedAt = Date.now()))
    const isolated = record(victim, 'member:self:isolated')
    const rejoined = record(victim, 'member:self:rejoined')
    const downAtPeer = record(peer, 'member:down')
    const upAtPeer = record(peer, 'member:up')

    const started = Date.now()
    const how = await cut()
    const stopped = Date.now()

    // While cut off: isolated, signal aborted (with the typed reason), declared down by the peer.
    expect(isolated.length).toBeGreaterThanOrEqual(1)
    expect(isolated[0]!.epoch).toBe(firstEpoch)
    expect(signal.aborted).toBe(true)
    expect((signal.reason as { code?: string }).code).toBe('CHORUS_ERR_MEMBERSHIP_ISOLATED')
    const down = downAtPeer.filter((d) => d.member.instanceId === 'victim')
    expect(down.length).toBeGreaterThanOrEqual(1)
    expect(down[0]!.member.epoch).toBe(firstEpoch)
    // The guarantee: the instance stops its exclusive work before any peer may take it over.
    expect(abortedAt).toBeLessThan(down[0]!.at)
    expect(isolated[0]!.at).toBeLessThan(down[0]!.at)

    // Once the database answers again: a new epoch, a fresh signal, and the peer sees it up again.
    await eventually(() => victim.members.self.state === 'up' && rejoined.length > 0, 'the victim to rejoin', 20_000)
    const last = rejoined.at(-1)!
    expect(last.epoch).toBeGreaterThan(firstEpoch)
    expect(last.epoch).toBe(victim.members.self.epoch)
    expect(victim.members.signal.aborted).toBe(false)
    expect(victim.members.signal).not.toBe(signal)
    await eventually(() => peer.members.get('victim')?.epoch === victim.members.self.epoch && peer.members.isLive('victim'), 'the peer to see the new epoch live', 15_000)
    expect(upAtPeer.some((u) => u.member.instanceId === 'victim' && u.member.epoch === last.epoch)).toBe(true)
    // And the rejoined instance works again: its heartbeat keeps it live past failAfter.
    await new Promise((r) => setTimeout(r, victim.options.failAfterMs + 500))
    expect(peer.members.isLive('victim', last.epoch)).toBe(true)
    expect(victim.members.self.state).toBe('up')

    console.log(
      `${how} for ${stopped - started} ms: isolated after ${isolated[0]!.at - started} ms, ` +
        `peer saw down after ${down[0]!.at - started} ms, rejoined ${last.at - stopped} ms after the cut ended ` +
        `(epoch ${firstEpoch} → ${last.epoch}, ${isolated.length} isolation(s))`,
    )
  }

  it('an instance whose connections are cut goes isolated and aborts its signal before a peer declares it down, then rejoins with a new epoch', async () => {
    const { role, url } = await roleFor('victim')
    await fencedAndRejoined(url, async () => `cut off (${await cutOff('victim', role, 4000)} backends terminated)`)
  })

  it('an instance whose database stops answering (queries and connections hang) does the same', async () => {
    const proxy = await startProxy(db.url)
    try {
      await fencedAndRejoined(proxy.url, async () => {
        proxy.hang()
        await new Promise((r) => setTimeout(r, 4000))
        proxy.heal()
        return 'hung'
      })
    } finally {
      await Promise.all(clusters.splice(0).map((c) => c.close()))
      await proxy.close()
    }
  })
})
