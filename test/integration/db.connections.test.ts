import { createServer } from 'node:net'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Cluster } from '../../src/cluster.js'
import { connect, type Db } from '../../src/db/connect.js'
import { ChorusError } from '../../src/errors.js'
import { eventually, member } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

describe('database connections', () => {
  let db: TestDatabase
  const clusters: Cluster[] = []
  const dbs: Db[] = []

  beforeEach(async () => {
    db = await testDatabase()
  })
  afterEach(async () => {
    await Promise.all(clusters.splice(0).map((c) => c.close()))
    await Promise.all(dbs.splice(0).map((d) => d.close()))
    await db.drop()
  })

  it('name each client after its purpose and instance, and parse and send arrays on every client', async () => {
    const d = await connect({ url: db.url, schema: 'chorus', instanceId: 'node-1', poolSize: 2 })
    dbs.push(d)
    const extra = d.open('extra', 1)
    for (const sql of [d.sql, extra]) {
      const [row] = await sql<{ texts: string[]; ints: string[]; name: string }[]>`
        select ${['a', 'b,c', 'd"e']}::text[] as texts, array[1, 2]::int8[] as ints, current_setting('application_name') as name`
      expect(row!.texts).toEqual(['a', 'b,c', 'd"e'])
      expect(row!.ints).toEqual(['1', '2'])
    }
    const names = await db.sql<{ application_name: string }[]>`
      select application_name from pg_stat_activity where datname = current_database() and application_name like 'chorus:%:node-1' order by 1`
    expect([...new Set(names.map((n) => n.application_name))]).toEqual(['chorus:extra:node-1', 'chorus:work:node-1'])
  })

  it('report an unreachable database with CHORUS_ERR_DB_CONNECT, the password redacted', async () => {
    // A port that accepts nothing: bind one, note it, release it.
    const server = createServer()
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const port = (server.address() as { port: number }).port
    await new Promise((r) => server.close(r))
    let err: unknown
    try {
      dbs.push(await connect({ url: `postgres://u:hunter2@127.0.0.1:${port}/x`, schema: 'chorus', instanceId: 'n', poolSize: 1 }))
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(ChorusError)
    expect((err as ChorusError).code).toBe('CHORUS_ERR_DB_CONNECT')
    expect((err as ChorusError).message).toContain(`127.0.0.1:${port}`)
    expect((err as ChorusError).message).not.toContain('hunter2')
  })

  it('an instance whose backends are terminated every 50 ms never sees an unhandled rejection, and works afterwards', async () => {
    const victim = await member(db.url, 'victim')
    const peer = await member(db.url, 'peer')
    clusters.push(victim, peer)
    await eventually(() => peer.members.isLive('victim'), 'the peer to see the victim')
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => void unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    let killed = 0
    try {
      const until = Date.now() + 2500
      while (Date.now() < until) {
        const rows = await db.sql<{ ok: boolean }[]>`
          select pg_terminate_backend(pid) as ok from pg_stat_activity
          where datname = current_database() and application_name like 'chorus:%:victim'`
        killed += rows.filter((r) => r.ok).length
        await new Promise((r) => setTimeout(r, 50))
      }
      await new Promise((r) => setTimeout(r, 200))
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
    expect(killed).toBeGreaterThan(10)
    expect(unhandled).toEqual([])
    // Still (or again) a member, seen live by its peer, and its bus carries messages both ways.
    await eventually(() => victim.members.self.state === 'up' && peer.members.isLive('victim', victim.members.self.epoch), 'the victim live at the peer', 15_000)
    const atVictim: string[] = []
    const atPeer: string[] = []
    victim.bus.subscribe('test', (d) => void atVictim.push(d))
    peer.bus.subscribe('test', (d) => void atPeer.push(d))
    await eventually(async () => {
      await peer.bus.publish('test', 'ping').catch(() => undefined)
      await victim.bus.publish('test', 'pong').catch(() => undefined)
      return atVictim.includes('ping') && atPeer.includes('pong')
    }, 'messages both ways after the storm', 15_000, 200)
  })
})
