// The balancer's relay against an upstream that answers on raw sockets exactly as each test says:
// what crosses (hop-by-hop headers, 1xx answers, bodies), and which upstream sockets are pooled
// again — only those whose answer ended cleanly and allows keep-alive.
import { once } from 'node:events'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Balancer } from '../../src/balancer/balancer.js'
import { type Conn, UpstreamError } from '../../src/balancer/upstream-conn.js'
import { UpstreamPool, type Waiter } from '../../src/balancer/upstream-pool.js'

interface Seen {
  method: string
  path: string
  head: string
  /** Which upstream connection carried it (0, 1, …). */
  socket: number
}

/** An upstream that reads request heads (no bodies) and lets `answer` write anything back. */
class RawUpstream {
  readonly seen: Seen[] = []
  readonly closed = new Set<number>()
  readonly server: Server
  #next = 0

  constructor(answer: (r: Seen, socket: Socket) => void) {
    this.server = createServer((socket) => {
      const id = this.#next++
      let buffered = ''
      socket.on('error', () => undefined)
      socket.on('close', () => this.closed.add(id))
      socket.on('data', (d) => {
        buffered += d.toString('latin1')
        for (let end = buffered.indexOf('\r\n\r\n'); end >= 0; end = buffered.indexOf('\r\n\r\n')) {
          const head = buffered.slice(0, end)
          buffered = buffered.slice(end + 4)
          const [method = '', path = ''] = head.split(' ')
          if (path === '/health') {
            socket.write('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n')
            continue
          }
          const r = { method, path, head, socket: id }
          this.seen.push(r)
          answer(r, socket)
        }
      })
    })
  }

  async listen(): Promise<number> {
    this.server.listen(0, '127.0.0.1')
    await once(this.server, 'listening')
    return (this.server.address() as { port: number }).port
  }

  /** The connection that carried the last request to `path`. */
  socketOf(path: string): number {
    return this.seen.filter((s) => s.path === path).at(-1)!.socket
  }
}

const held: Socket[] = []
/** Larger than what the sockets between the instance and the client buffer: the balancer must wait. */
const BIG = 16 * 1024 * 1024

const upstream = new RawUpstream((r, socket) => {
  switch (r.path) {
    case '/keep':
      return void socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=30\r\nConnection: keep-alive\r\nX-Kept: yes\r\n\r\nok')
    case '/unframed':
      socket.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nread until ')
      return void setTimeout(() => socket.end('the close'), 20)
    case '/cut':
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b')
      return void setTimeout(() => socket.destroy(), 20)
    case '/early':
      return void socket.write('HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nafter')
    case '/nobody':
      return void socket.write(r.method === 'HEAD' ? 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n' : 'HTTP/1.1 204 No Content\r\n\r\n')
    case '/endless':
      return void socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n${'x'.repeat(1000)}`)
    case '/big': {
      const piece = Buffer.alloc(64 * 1024, 0x62)
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${BIG}\r\n\r\n`)
      const send = (left: number): void => {
        while (left > 0) {
          left -= piece.length
          if (!socket.write(piece)) return void socket.once('drain', () => send(left))
        }
      }
      return send(BIG)
    }
    case '/hold':
      held.push(socket)
      return
    default:
      socket.write('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n')
  }
})

const log = pino({ level: 'silent' })
let balancer: Balancer
let url = ''
let port = 0

beforeAll(async () => {
  port = await upstream.listen()
  const members = [{ id: 'raw', epoch: 1, url: `http://127.0.0.1:${port}`, status: 'up' as const }]
  balancer = new Balancer({ members, onChange: () => () => undefined }, log, { port: 0, secret: 'relay-test-secret-0123456789', healthPath: '/health', connectionsPerUpstream: 2 })
  await balancer.start()
  url = `http://127.0.0.1:${balancer.port}`
})

afterAll(async () => {
  await balancer?.close()
  for (const s of held) s.destroy()
  upstream.server.close()
})

/** The next request goes over another upstream socket than the one that carried `path`. */
async function expectNotPooled(path: string): Promise<void> {
  const used = upstream.socketOf(path)
  await fetch(`${url}/keep`).then((r) => r.text())
  expect(upstream.socketOf('/keep')).not.toBe(used)
}

describe('the relay to an upstream', () => {
  it('reuses a kept-alive upstream socket, and strips hop-by-hop headers both ways', async () => {
    const first = await fetch(`${url}/keep`, { headers: { te: 'trailers', 'x-app': '1' } })
    expect(await first.text()).toBe('ok')
    expect(first.headers.get('x-kept')).toBe('yes')
    // The client's keep-alive is the balancer's own (keepAliveTimeoutMs), not the instance's.
    expect(first.headers.get('keep-alive')).toBe('timeout=5')
    const second = await fetch(`${url}/keep`)
    expect(await second.text()).toBe('ok')
    const [a, b] = upstream.seen.filter((s) => s.path === '/keep')
    expect(b!.socket).toBe(a!.socket)
    expect(a!.head).toMatch(/\r\nx-app: 1\r\n/)
    expect(a!.head).toMatch(/\r\nx-forwarded-for: 127\.0\.0\.1\r\n/)
    expect(a!.head).not.toMatch(/\r\n(te|connection|keep-alive):/i)
  })

  it('relays an answer without framing until the instance closes, and does not pool that socket', async () => {
    const res = await fetch(`${url}/unframed`)
    expect(await res.text()).toBe('read until the close')
    await expectNotPooled('/unframed')
  })

  it('cuts the client off when the instance closes in the middle of a body, and does not pool that socket', async () => {
    const res = await fetch(`${url}/cut`)
    expect(res.status).toBe(200)
    await expect(res.text()).rejects.toThrow()
    await expectNotPooled('/cut')
  })

  it('does not forward 1xx answers, and reads no body after HEAD or 204 (the socket serves again)', async () => {
    const early = await fetch(`${url}/early`)
    expect(early.status).toBe(200)
    expect(await early.text()).toBe('after')
    const head = await fetch(`${url}/nobody`, { method: 'HEAD' })
    expect(head.status).toBe(200)
    expect(head.headers.get('content-length')).toBe('5')
    const headSocket = upstream.socketOf('/nobody')
    const none = await fetch(`${url}/nobody`)
    expect(none.status).toBe(204)
    expect(await none.text()).toBe('')
    expect(upstream.socketOf('/nobody')).toBe(headSocket)
  })

  it('holds the instance while a client does not read, and relays the whole answer once it does', async () => {
    const client = connect(balancer.port, '127.0.0.1')
    client.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n')
    client.pause()
    await new Promise((r) => setTimeout(r, 300))
    let received = 0
    let head = ''
    await new Promise<void>((resolve) => {
      client.on('data', (d: Buffer) => {
        if (!head) {
          const end = d.indexOf('\r\n\r\n')
          head = d.subarray(0, end).toString('latin1')
          d = d.subarray(end + 4)
        }
        received += d.length
        if (received >= BIG) resolve()
      })
      client.resume()
    })
    client.destroy()
    expect(head).toMatch(/^HTTP\/1\.1 200 /)
    expect(received).toBe(BIG)
  })

  it('destroys the upstream socket when the client leaves in the middle of the answer', async () => {
    const ac = new AbortController()
    const res = await fetch(`${url}/endless`, { signal: ac.signal })
    const reader = res.body!.getReader()
    await reader.read()
    ac.abort()
    const used = upstream.socketOf('/endless')
    for (let i = 0; i < 100 && !upstream.closed.has(used); i++) await new Promise((r) => setTimeout(r, 20))
    expect(upstream.closed.has(used)).toBe(true)
  })

  it('opens at most connectionsPerUpstream sockets; the other requests wait for one', async () => {
    const answers = Array.from({ length: 6 }, () => fetch(`${url}/hold`).then(async (r) => `${r.status} ${await r.text()}`))
    let answered = 0
    while (answered < 6) {
      await new Promise((r) => setTimeout(r, 20))
      for (const s of held.splice(0)) {
        s.write('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nheld')
        answered++
      }
    }
    expect(await Promise.all(answers)).toEqual(Array(6).fill('200 held'))
    const sockets = new Set(upstream.seen.filter((s) => s.path === '/hold').map((s) => s.socket))
    expect(sockets.size).toBeLessThanOrEqual(2)
  })
})

describe('the upstream pool', () => {
  it('refuses a waiter over its bound, and hands a freed place to the first waiter', async () => {
    const pool = new UpstreamPool({ host: '127.0.0.1', port, secure: false }, { limit: 1, connectTimeoutMs: 2000, maxHeaderBytes: 16384, maxWaiters: 1 })
    const events: string[] = []
    const conns: Conn[] = []
    const waiter = (name: string): Waiter => ({
      ready: (conn) => {
        events.push(`${name} ready`)
        conns.push(conn)
      },
      failed: (err) => events.push(`${name} ${err.code}`),
    })
    pool.acquire(waiter('first'))
    pool.acquire(waiter('second'))
    pool.acquire(waiter('third'))
    expect(events).toEqual(['first ready', 'third POOL_FULL'])
    expect(pool.size).toEqual({ open: 1, idle: 0, waiting: 1 })
    conns[0]!.destroy()
    expect(events).toEqual(['first ready', 'third POOL_FULL', 'second ready'])
    pool.close()
    conns[1]!.destroy()
    pool.acquire(waiter('late'))
    expect(events.at(-1)).toBe('late POOL_CLOSED')
    expect(pool.size).toEqual({ open: 0, idle: 0, waiting: 0 })
  })

  it('tells a refused connection apart from one that failed after sending', () => {
    expect(new UpstreamError('ECONNREFUSED', 'x')).toMatchObject({ notSent: true, eject: true })
    expect(new UpstreamError('ECONNRESET', 'x')).toMatchObject({ notSent: false, eject: true })
    // A kept-alive socket closed by the instance as it was reused: not a sign the instance is gone.
    expect(new UpstreamError('ECONNRESET', 'x', { reused: true })).toMatchObject({ notSent: false, eject: false })
    expect(new UpstreamError('POOL_FULL', 'x')).toMatchObject({ notSent: true, eject: false })
  })
})
