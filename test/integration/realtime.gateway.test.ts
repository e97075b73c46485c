import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createCluster, type Cluster } from '../../src/index.js'
import type { AttachOptions } from '../../src/realtime/gateway.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { connectStomp, rawSocket, until, type TestClient } from '../helpers/stomp.js'

const secret = 'realtime-test-secret-0123456789'

/** Users are named by the `login` CONNECT header; `/topic/secret/**` is for nobody; everything else is allowed. */
const auth: AttachOptions = {
  authenticate: (_req, headers) => (headers?.login ? { name: headers.login } : null),
  authorize: (principal, action, destination) => {
    if (destination.startsWith('/topic/secret')) return false
    if (destination.startsWith('/user/')) return !!principal
    return action === 'subscribe' || destination.startsWith('/app/') || destination.startsWith('/topic/open')
  },
}

describe('realtime gateway across instances', () => {
  let db: TestDatabase
  const nodes: { cluster: Cluster; server: Server; url: string }[] = []
  const clients: TestClient[] = []

  async function node(id: string, attach: AttachOptions = auth) {
    const cluster = await createCluster({ databaseUrl: db.url, instanceId: id, secret, preset: 'local', logLevel: 'silent' })
    const server = createServer((_q, r) => r.end('ok'))
    cluster.realtime.attach(server, { heartbeat: { send: 0, receive: 0 }, ...attach })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const n = { cluster, server, url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}/stomp` }
    nodes.push(n)
    return n
  }

  beforeAll(async () => {
    db = await testDatabase()
    await node('a')
    await node('b')
    await node('c')
  })

  afterAll(async () => {
    for (const c of clients) await c.close().catch(() => undefined)
    for (const n of nodes) {
      await n.cluster.close()
      n.server.close()
    }
    await db.drop()
  })

  const client = async (url: string, login?: string) => {
    const c = await connectStomp(url, { connectHeaders: login ? { login } : {} })
    clients.push(c)
    return c
  }

  it('delivers in order what another instance publishes to /topic/x', async () => {
    const [a, b] = nodes
    const c = await client(a!.url)
    const got = c.subscribe('/topic/x', { receipt: 'sub-x' })
    await new Promise<void>((r) => c.client.watchForReceipt('sub-x', () => r()))
    const ids: number[] = []
    for (let i = 0; i < 200; i++) ids.push(await b!.cluster.realtime.publish('/topic/x', { n: i }))
    await until(() => got.length === 200, 10_000, '200 messages')
    expect(got.map((m) => JSON.parse(m.body).n)).toEqual([...Array(200).keys()])
    expect(got.map((m) => Number(m.headers['message-id']))).toEqual(ids)
    expect(ids.every((id, i) => i === 0 || id > ids[i - 1]!)).toBe(true)
    expect(got[0]!.headers['content-type']).toBe('application/json')
  })

  it('sends to every session of one user on every instance and to nobody else', async () => {
    const [a, b, c] = nodes
    const u1b = await client(b!.url, 'u1')
    const u1c = await client(c!.url, 'u1')
    const u2b = await client(b!.url, 'u2')
    const got = [u1b, u1c, u2b].map((cl, i) => {
      const r = cl.subscribe('/user/queue/results', { receipt: `r${i}` })
      return r
    })
    await new Promise((r) => setTimeout(r, 200))
    await a!.cluster.realtime.sendToUser('u1', '/user/queue/results', 'for u1')
    await until(() => got[0]!.length === 1 && got[1]!.length === 1, 10_000, 'u1 sessions')
    expect(got[0]![0]!.body).toBe('for u1')
    expect(got[1]![0]!.body).toBe('for u1')
    await a!.cluster.realtime.sendToUser('u2', '/user/queue/results', 'for u2')
    await until(() => got[2]!.length === 1, 10_000, 'u2 session')
    expect(got[2]![0]!.body).toBe('for u2')
    expect(got[0]).toHaveLength(1)
    expect(got[1]).toHaveLength(1)
  })

  it('counts sessions per instance and per user cluster-wide', async () => {
    const [a, b, c] = nodes
    const before = await a!.cluster.realtime.presence()
    const x1 = await client(b!.url, 'presence-user')
    const x2 = await client(c!.url, 'presence-user')
    let snap = before
    for (let i = 0; i < 50 && snap.users['presence-user'] !== 2; i++) {
      await new Promise((r) => setTimeout(r, 100))
      snap = await a!.cluster.realtime.presence()
    }
    expect(snap.users['presence-user']).toBe(2)
    expect(snap.total).toBe(before.total + 2)
    expect(snap.instances.b).toBe((before.instances.b ?? 0) + 1)
    await x1.close()
    await x2.close()
    for (let i = 0; i < 50 && snap.users['presence-user'] !== undefined; i++) {
      await new Promise((r) => setTimeout(r, 100))
      snap = await a!.cluster.realtime.presence()
    }
    expect(snap.users['presence-user']).toBeUndefined()
  })

  it('ends every session of a signed-out user on every instance, and no one else\'s', async () => {
    const [a, b, c] = nodes
    const onB = await client(b!.url, 'leaving')
    const onC = await client(c!.url, 'leaving')
    const other = await client(c!.url, 'staying')
    await a!.cluster.realtime.disconnectUser('leaving', 'signed out')
    await until(() => onB.errors.length === 1 && onC.errors.length === 1, 10_000, 'both sessions ended')
    for (const ended of [onB, onC]) {
      expect(ended.errors[0]!.headers.message!.replace(/\\c/g, ':')).toBe('CHORUS_ERR_REALTIME_UNAUTHENTICATED: session ended: signed out')
      await until(() => ended.closes.length > 0, 5000, 'closed')
      expect(ended.closes[0]).toBe(1008)
    }
    expect(other.client.connected).toBe(true)
    await expect(a!.cluster.realtime.disconnectUser('')).rejects.toMatchObject({ code: 'CHORUS_ERR_REALTIME_USER_INVALID' })
  })

  it('refuses bad arguments with typed errors', async () => {
    const rt = nodes[0]!.cluster.realtime
    expect(() => rt.handle(42 as unknown as string, () => undefined)).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_REALTIME_DESTINATION_INVALID' }))
    expect(() => rt.handle('/topic/x', () => undefined)).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_REALTIME_DESTINATION_INVALID' }))
    expect(() => rt.handle('/app/x', 'not a function' as never)).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_OPTIONS_INVALID', details: { option: 'handler' } }))
    await expect(rt.publish('/user/queue/x', 1)).rejects.toMatchObject({ code: 'CHORUS_ERR_REALTIME_DESTINATION_INVALID' })
    await expect(rt.publish(undefined as unknown as string, 1)).rejects.toMatchObject({ code: 'CHORUS_ERR_REALTIME_DESTINATION_INVALID' })
    await expect(rt.publish('/topic/x', 1, null as never)).rejects.toMatchObject({ code: 'CHORUS_ERR_OPTIONS_INVALID', details: { option: 'headers' } })
    await expect(rt.publish('/topic/x', 1, { 'x-a': 'line\nbreak' })).rejects.toMatchObject({ code: 'CHORUS_ERR_REALTIME_DESTINATION_INVALID' })
    await expect(rt.publish('/topic/x', 'x'.repeat(64 * 1024 + 1))).rejects.toMatchObject({ code: 'CHORUS_ERR_REALTIME_BODY_TOO_LARGE' })
    await expect(rt.sendToUser(7 as unknown as string, '/user/queue/x', 1)).rejects.toMatchObject({ code: 'CHORUS_ERR_REALTIME_USER_INVALID' })
    await expect(rt.sendToUser('alice', '/topic/x', 1)).rejects.toMatchObject({ code: 'CHORUS_ERR_REALTIME_DESTINATION_INVALID' })
  })

  it('answers an unauthorized SUBSCRIBE with ERROR and closes; nothing is delivered', async () => {
    const [a, b] = nodes
    const raw = await rawSocket(a!.url)
    raw.send('CONNECT\naccept-version:1.2\nhost:x\n\n\u0000')
    await until(() => raw.received.some((f) => f.startsWith('CONNECTED')))
    raw.send('SUBSCRIBE\nid:1\ndestination:/topic/secret/plans\nreceipt:s1\n\n\u0000')
    await raw.closed
    const error = raw.received.find((f) => f.startsWith('ERROR'))
    expect(error).toMatch(/CHORUS_ERR_REALTIME_FORBIDDEN/)
    expect(error).toMatch(/receipt-id:s1/)
    await b!.cluster.realtime.publish('/topic/secret/plans', 'hidden')
    await new Promise((r) => setTimeout(r, 200))
    expect(raw.received.some((f) => f.includes('hidden'))).toBe(false)
  })

  it('answers malformed and oversized frames with ERROR and closes, and keeps serving others', async () => {
    const [a] = nodes
    const bad = [
      ['oversized frame', `SEND\ndestination:/topic/open\n\n${'x'.repeat(100 * 1024)}\u0000`, 'CHORUS_ERR_REALTIME_LIMIT'],
      ['too many headers', `SEND\ndestination:/topic/open\n${Array.from({ length: 100 }, (_, i) => `h${i}:v`).join('\n')}\n\n\u0000`, 'CHORUS_ERR_REALTIME_LIMIT'],
      ['bad escape', 'SEND\ndestination:/topic/open\nx:a\\tb\n\n\u0000', 'CHORUS_ERR_REALTIME_PROTOCOL'],
      ['unknown command', 'SHOUT\n\n\u0000', 'CHORUS_ERR_REALTIME_PROTOCOL'],
    ] as const
    const healthy = await client(a!.url)
    const got = healthy.subscribe('/topic/health', { receipt: 'h' })
    await new Promise<void>((r) => healthy.client.watchForReceipt('h', () => r()))
    for (const [what, frame, code] of bad) {
      const raw = await rawSocket(a!.url)
      raw.send('CONNECT\naccept-version:1.2\nhost:x\n\n\u0000')
      await until(() => raw.received.some((f) => f.startsWith('CONNECTED')))
      raw.send(frame)
      const closeCode = await raw.closed
      expect(raw.received.find((f) => f.startsWith('ERROR')), what).toContain(code)
      expect(closeCode, what).toBeGreaterThanOrEqual(1000)
    }
    await a!.cluster.realtime.publish('/topic/health', 'still here')
    await until(() => got.length === 1)
    expect(got[0]!.body).toBe('still here')
  })

  it('runs /app handlers and sends the RECEIPT after they finish', async () => {
    const [a] = nodes
    const seen: string[] = []
    const off = a!.cluster.realtime.handle('/app/answers/*', async (m) => {
      await new Promise((r) => setTimeout(r, 50))
      seen.push(`${m.principal?.name}:${m.destination}:${m.body}`)
    })
    const c = await client(a!.url, 'student')
    await new Promise<void>((resolve) => {
      c.client.watchForReceipt('ans', () => resolve())
      c.client.publish({ destination: '/app/answers/q1', body: 'B', headers: { receipt: 'ans' } })
    })
    expect(seen).toEqual(['student:/app/answers/q1:B'])
    off()
  })

  it('resumes on another instance from the last id seen, without holes or duplicates', async () => {
    const [a, b, c] = nodes
    const first = await client(a!.url)
    const got = first.subscribe('/topic/resume', { receipt: 'r1' })
    await new Promise<void>((r) => first.client.watchForReceipt('r1', () => r()))
    for (let i = 0; i < 10; i++) await c!.cluster.realtime.publish('/topic/resume', String(i))
    await until(() => got.length === 10)
    await first.close()
    const lastId = got.at(-1)!.headers['message-id']!
    for (let i = 10; i < 25; i++) await c!.cluster.realtime.publish('/topic/resume', String(i))
    const second = await client(b!.url)
    const more = second.subscribe('/topic/resume', { 'chorus-last-id': lastId })
    for (let i = 25; i < 30; i++) await c!.cluster.realtime.publish('/topic/resume', String(i))
    await until(() => more.length === 20, 10_000, '20 resumed messages')
    expect([...got, ...more].map((m) => m.body)).toEqual([...Array(30).keys()].map(String))
    expect(more.some((m) => m.headers['chorus-gap'])).toBe(false)
  })

  it('sends an explicit gap notice when the missed messages left the retention window', async () => {
    const [a, b] = nodes
    const c = await client(a!.url)
    const got = c.subscribe('/topic/retained')
    await new Promise((r) => setTimeout(r, 100))
    await b!.cluster.realtime.publish('/topic/retained', 'seen')
    await until(() => got.length === 1)
    const lastId = got[0]!.headers['message-id']!
    await c.close()
    for (let i = 0; i < 5; i++) await b!.cluster.realtime.publish('/topic/retained', `missed ${i}`)
    await db.sql`delete from realtime_log where destination = '/topic/retained' and id > ${lastId} and id <= ${Number(lastId) + 2}`
    await db.sql`insert into realtime_swept (destination, user_name, upto) values ('/topic/retained', '', ${Number(lastId) + 2})`
    const again = await client(a!.url)
    const resumed = again.subscribe('/topic/retained', { 'chorus-last-id': lastId })
    await until(() => resumed.length >= 1)
    expect(resumed[0]!.headers['chorus-gap']).toBe('retention')
    await b!.cluster.realtime.publish('/topic/retained', 'after')
    await until(() => resumed.some((m) => m.body === 'after'))
  })

  it('keeps an idle connection with heart-beats, and drops a peer that stops answering', async () => {
    const [a] = nodes
    const srv = createServer()
    a!.cluster.realtime.attach(srv, { ...auth, path: '/hb', heartbeat: { send: 100, receive: 100 } })
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
    const url = `ws://127.0.0.1:${(srv.address() as AddressInfo).port}/hb`
    const alive = await connectStomp(url, { heartbeatMs: 100 })
    clients.push(alive)
    await new Promise((r) => setTimeout(r, 1200))
    expect(alive.client.connected).toBe(true)
    expect(alive.closes).toEqual([])
    const silent = await rawSocket(url)
    silent.send('CONNECT\naccept-version:1.2\nhost:x\nheart-beat:100,100\n\n\u0000')
    const code = await silent.closed
    expect(silent.received[0]).toMatch(/^CONNECTED/)
    expect(code).toBe(1006)
    srv.close()
  })
})
