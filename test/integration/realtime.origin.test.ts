import { readdirSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { connect as netConnect, type AddressInfo } from 'node:net'
import { Client, type IFrame } from '@stomp/stompjs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocket } from 'ws'
import { createCluster, type Cluster } from '../../src/index.js'
import type { AttachOptions } from '../../src/realtime/gateway.js'
import { eventually } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

const secret = 'realtime-origin-secret-0123456789'
const evil = 'https://evil.example'

/** Users come from a `user` cookie at the upgrade or the `login` CONNECT header; anyone may subscribe to /topic/**. */
const auth: AttachOptions = {
  authenticate: (req, headers, current) => {
    if (headers?.login) return { name: headers.login }
    const m = /(?:^|;\s*)user=(\w+)/.exec(req.headers.cookie ?? '')
    return m ? { name: m[1]! } : (current ?? null)
  },
  authorize: (_p, action, destination) => action === 'subscribe' && destination.startsWith('/topic/'),
  heartbeat: { send: 0, receive: 0 },
}

interface Upgrade {
  status: number
  body: string
}

/** A WebSocket handshake as a browser sends it; resolves with the HTTP answer once the server has closed the socket. */
function rawUpgrade(port: number, headers: Record<string, string>): Promise<Upgrade> {
  return new Promise((resolve, reject) => {
    const socket = netConnect(port, '127.0.0.1')
    let data = ''
    socket.setEncoding('utf8')
    socket.on('data', (c: string) => (data += c))
    socket.on('error', reject)
    socket.on('close', () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? 0)
      resolve({ status, body: data.slice(data.indexOf('\r\n\r\n') + 4) })
    })
    let head = `GET /stomp HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n`
    for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`
    socket.write(head + '\r\n')
    // The client never closes its side: only the server can end these sockets.
  })
}

/** The answer to a `ws` handshake: 101 when it opened (then closed again), else the refusal. */
function wsAnswer(url: string, opts: { origin?: string; headers?: Record<string, string> } = {}): Promise<Upgrade> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, ['v12.stomp'], { ...(opts.origin ? { origin: opts.origin } : {}), headers: opts.headers ?? {} })
    ws.on('open', () => {
      ws.close()
      resolve({ status: 101, body: '' })
    })
    ws.on('unexpected-response', (_req, res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    ws.on('error', () => undefined)
  })
}

interface Stomp {
  client: Client
  errors: IFrame[]
  connected: Promise<boolean>
}

/** The real @stomp/stompjs client over `ws`, sending `origin` like a browser page would. */
function stomp(url: string, opts: { origin?: string; login?: string } = {}): Stomp {
  const errors: IFrame[] = []
  let settle: (ok: boolean) => void = () => undefined
  const connected = new Promise<boolean>((r) => (settle = r))
  const client = new Client({
    webSocketFactory: () => new WebSocket(url, ['v12.stomp'], opts.origin ? { origin: opts.origin } : {}) as unknown as globalThis.WebSocket,
    connectHeaders: opts.login ? { login: opts.login } : {},
    heartbeatIncoming: 0,
    heartbeatOutgoing: 0,
    reconnectDelay: 0,
    debug: () => undefined,
  })
  client.onConnect = () => settle(true)
  client.onStompError = (f) => {
    errors.push(f)
    settle(false)
  }
  client.onWebSocketClose = () => settle(false)
  client.activate()
  return { client, errors, connected }
}

const openFds = () => readdirSync('/proc/self/fd').length

describe('who may open a WebSocket to the gateway', () => {
  let db: TestDatabase
  let cluster: Cluster
  const servers: Server[] = []
  const clients: Client[] = []

  async function serve(opts: AttachOptions = {}): Promise<{ server: Server; port: number; url: string }> {
    const server = createServer((_q, r) => r.end('ok'))
    cluster.realtime.attach(server, { ...auth, ...opts })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    servers.push(server)
    const port = (server.address() as AddressInfo).port
    return { server, port, url: `ws://127.0.0.1:${port}/stomp` }
  }

  const connections = (server: Server) => new Promise<number>((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n))))

  beforeAll(async () => {
    db = await testDatabase()
    cluster = await createCluster({ databaseUrl: db.url, instanceId: 'origin-a', secret, preset: 'local', logLevel: 'silent' })
  })

  afterAll(async () => {
    for (const c of clients) await c.deactivate().catch(() => undefined)
    await cluster?.close()
    for (const s of servers) s.close()
    await db?.drop()
  })

  it('refuses a foreign Origin at the upgrade with 403 and admits its own origin, a listed one and clients that send none', async () => {
    const { port, url } = await serve({ allowedOrigins: ['https://app.example.com'] })
    const refused = await wsAnswer(url, { origin: evil })
    expect(refused.status).toBe(403)
    expect(refused.body).toMatch(/^CHORUS_ERR_REALTIME_ORIGIN_FORBIDDEN: WebSocket origin refused: origin https:\/\/evil\.example/)
    expect((await wsAnswer(url, { origin: 'null' })).status).toBe(403)
    expect((await wsAnswer(url, { origin: `http://127.0.0.1:${port + 1}` })).status).toBe(403) // another port of the same host
    expect((await wsAnswer(url, { origin: `http://127.0.0.1:${port}` })).status).toBe(101)
    expect((await wsAnswer(url, { origin: 'https://app.example.com' })).status).toBe(101)
    expect((await wsAnswer(url)).status).toBe(101)

    // The real STOMP client: the page of another site never gets a session, the server's own page does.
    const hijack = stomp(url, { origin: evil, login: 'alice' })
    clients.push(hijack.client)
    expect(await hijack.connected).toBe(false)
    await hijack.client.deactivate()
    const own = stomp(url, { origin: `http://127.0.0.1:${port}`, login: 'alice' })
    clients.push(own.client)
    expect(await own.connected).toBe(true)
    await own.client.deactivate()
  })

  it('allows any origin only when told to, and refuses malformed allowedOrigins', async () => {
    const { url } = await serve({ allowedOrigins: '*' })
    expect((await wsAnswer(url, { origin: evil })).status).toBe(101)
    const srv = createServer()
    for (const bad of [['https://app.example.com/path'], ['app.example.com'], 'https://x.example' as unknown as string[]]) {
      expect(() => cluster.realtime.attach(srv, { allowedOrigins: bad })).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_OPTIONS_INVALID' }))
    }
  })

  it('refuses unknown or malformed attach options, naming the option, and attaches nothing', () => {
    const srv = createServer()
    const refused: [unknown, string, string][] = [
      [{ allowedOrigin: ['https://app.example.com'] }, 'allowedOrigin', 'is not a known option'],
      [{ limits: { maxSubscription: 5 } }, 'limits.maxSubscription', 'is not a known option'],
      [{ limits: { maxConnectionsPerPrincipal: 0 } }, 'limits.maxConnectionsPerPrincipal', 'must be a positive integer'],
      [{ limits: { maxConnectionsPerAddress: 1.5 } }, 'limits.maxConnectionsPerAddress', 'must be a positive integer'],
      [{ heartbeat: { send: -1 } }, 'heartbeat.send', 'must be a whole number of milliseconds up to 2147483647'],
      [{ authorize: true }, 'authorize', 'must be a function'],
      [{ path: 'stomp' }, 'path', 'must be a URL path such as /stomp'],
      [{ trustProxy: '127.0.0.1' }, 'trustProxy', 'must be an array of IP addresses'],
      [null, 'options', 'must be an object'],
    ]
    for (const [opts, option, why] of refused) {
      expect(() => cluster.realtime.attach(srv, opts as AttachOptions)).toThrow(
        expect.objectContaining({ code: 'CHORUS_ERR_OPTIONS_INVALID', message: `invalid option "${option}": ${why}`, details: { option } }),
      )
    }
    expect(() => cluster.realtime.attach({} as Server)).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_OPTIONS_INVALID', details: { option: 'server' } }))
    expect(srv.listenerCount('upgrade')).toBe(0)
  })

  it('closes every socket of a flood of refused upgrades: open sockets and file descriptors return to their baseline', async () => {
    const { server, port } = await serve()
    const baseSockets = await connections(server)
    const baseFds = openFds()
    for (let round = 0; round < 4; round++) {
      const answers = await Promise.all(Array.from({ length: 50 }, () => rawUpgrade(port, { Origin: evil })))
      for (const a of answers) {
        expect(a.status).toBe(403)
        expect(a.body).toMatch(/^CHORUS_ERR_REALTIME_ORIGIN_FORBIDDEN/)
      }
    }
    await eventually(async () => (await connections(server)) === baseSockets, 'the server back to its baseline of open sockets', 10_000, 50)
    const fds = await eventually(() => (openFds() <= baseFds + 3 ? openFds() : null), 'file descriptors back to their baseline', 10_000, 50)
    console.log(`200 refused upgrades: server sockets ${baseSockets} → ${await connections(server)}, fds ${baseFds} → ${fds}`)
  })

  it('caps the connections of one user: the next CONNECT gets an ERROR frame, the next cookie upgrade a 429; closing one makes room', async () => {
    const { server, url } = await serve({ limits: { maxConnectionsPerPrincipal: 2 } })
    const first = stomp(url, { login: 'bob' })
    const second = stomp(url, { login: 'bob' })
    clients.push(first.client, second.client)
    expect(await first.connected).toBe(true)
    expect(await second.connected).toBe(true)
    const third = stomp(url, { login: 'bob' })
    clients.push(third.client)
    expect(await third.connected).toBe(false)
    // Before CONNECTED no version is agreed, so the client leaves the header escaped (`\c` for `:`).
    expect(third.errors[0]!.headers.message!.replace(/\\c/g, ':')).toMatch(/^CHORUS_ERR_REALTIME_TOO_MANY_CONNECTIONS: too many connections: 2 connections of this user/)
    await third.client.deactivate()
    const byCookie = await wsAnswer(url, { headers: { cookie: 'user=bob' } })
    expect(byCookie.status).toBe(429)
    expect(byCookie.body).toMatch(/^CHORUS_ERR_REALTIME_TOO_MANY_CONNECTIONS/)
    const other = stomp(url, { login: 'carol' })
    clients.push(other.client)
    expect(await other.connected).toBe(true)

    await first.client.deactivate()
    const again = await eventually(async () => {
      const s = stomp(url, { login: 'bob' })
      clients.push(s.client)
      if (await s.connected) return s
      await s.client.deactivate()
      return null
    }, 'room for bob again')
    for (const c of [second, other, again]) await c.client.deactivate()
    await eventually(async () => (await connections(server)) === 0, 'all sockets closed', 10_000, 50)
  })

  it('caps the connections of one address (the client behind a trusted proxy counts, not the proxy)', async () => {
    const { server, port, url } = await serve({ limits: { maxConnectionsPerAddress: 3 }, trustProxy: ['127.0.0.1'] })
    const held = await Promise.all(
      [1, 2, 3].map(
        () =>
          new Promise<WebSocket>((resolve, reject) => {
            const ws = new WebSocket(url, ['v12.stomp'])
            ws.on('open', () => resolve(ws))
            ws.on('error', reject)
          }),
      ),
    )
    const over = await rawUpgrade(port, {})
    expect(over.status).toBe(429)
    expect(over.body).toMatch(/^CHORUS_ERR_REALTIME_TOO_MANY_CONNECTIONS: too many connections: 3 from this address/)
    // Through a trusted proxy, each forwarded client has its own budget; a forged chain cannot add one.
    expect((await wsAnswer(url, { headers: { 'x-forwarded-for': '203.0.113.7' } })).status).toBe(101)
    expect((await wsAnswer(url, { headers: { 'x-forwarded-for': 'not-an-address' } })).status).toBe(429)
    for (const ws of held) ws.close()
    await eventually(async () => (await connections(server)) === 0, 'the held sockets closed', 10_000, 50)
    expect((await wsAnswer(url)).status).toBe(101)
  })

  it('caps the subscriptions of one connection with an ERROR frame', async () => {
    const { url } = await serve({ limits: { maxSubscriptions: 3 } })
    const c = stomp(url, { login: 'dave' })
    clients.push(c.client)
    expect(await c.connected).toBe(true)
    const closed = new Promise<void>((r) => (c.client.onWebSocketClose = () => r()))
    for (let i = 0; i < 4; i++) c.client.subscribe(`/topic/s${i}`, () => undefined)
    await closed
    expect(c.errors.at(-1)!.headers.message).toMatch(/^CHORUS_ERR_REALTIME_LIMIT: .*more than 3 subscriptions/)
    await c.client.deactivate()
  })
})
