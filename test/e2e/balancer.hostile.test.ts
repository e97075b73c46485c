// Hostile traffic against the balancer (`chorus balancer`, its own process) and an instance, on real
// sockets: upgrade floods, slow chunked bodies, early answers to `Expect: 100-continue` uploads and
// forged proxy headers. Leaks are measured as the balancer's and the instances' open file
// descriptors (/proc/<pid>/fd), which must come back to where they were.
import { readdirSync, readlinkSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { pino } from 'pino'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocket } from 'ws'
import { Balancer, type BalancerOptions } from '../../src/balancer/balancer.js'
import { MemberWatcher } from '../../src/balancer/watcher.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { Proc } from '../helpers/proc.js'
import { until } from '../helpers/stomp.js'

const root = fileURLToPath(new URL('../..', import.meta.url))
const bin = join(root, 'bin/chorus.js')
const fixture = join(root, 'test/fixtures/edge-node.mjs')
const secret = 'balancer-hostile-secret-0123456789'
const log = pino({ level: process.env.CHORUS_TEST_VERBOSE ? 'info' : 'silent' })
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Open file descriptors of a process, and how many of them are sockets. */
function fds(pid: number): { all: number; sockets: number } {
  const names = readdirSync(`/proc/${pid}/fd`)
  let sockets = 0
  for (const n of names) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${n}`).startsWith('socket:')) sockets++
    } catch {
      /* closed meanwhile */
    }
  }
  return { all: names.length, sockets }
}

/** Waits (bounded) for a process's descriptors to come back within `slack` of `base`; returns the last count. */
async function settled(pid: number, base: { all: number; sockets: number }, slack = 6): Promise<{ all: number; sockets: number }> {
  let now = fds(pid)
  for (let i = 0; i < 100 && (now.all > base.all + slack || now.sockets > base.sockets + slack); i++) {
    await sleep(100)
    now = fds(pid)
  }
  return now
}

interface Exchange {
  /** Everything the server sent. */
  data: string
  /** The server closed the connection (rather than our bound running out). */
  closedByServer: boolean
}

/** Writes `text` on a new connection and reads until the server closes it, at most `boundMs`. */
function exchange(port: number, text: string, boundMs = 5000): Promise<Exchange> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1', () => s.write(text))
    let data = ''
    let closedByServer = false
    const timer = setTimeout(() => s.destroy(), boundMs)
    s.on('data', (d) => (data += d.toString('latin1')))
    s.on('end', () => (closedByServer = true))
    s.on('error', () => undefined)
    s.on('close', () => {
      clearTimeout(timer)
      resolve({ data, closedByServer })
    })
  })
}

const upgradeTo = (path: string) =>
  `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`

/** `count` exchanges, `batch` at a time. */
async function flood(port: number, text: string, count: number, batch = 50): Promise<Exchange[]> {
  const all: Exchange[] = []
  for (let i = 0; i < count; i += batch) all.push(...(await Promise.all(Array.from({ length: Math.min(batch, count - i) }, () => exchange(port, text)))))
  return all
}

/** How many exchanges were answered `status`, and how many the server closed. */
const refusedAndClosed = (all: Exchange[], status: number) => ({
  refused: all.filter((e) => e.data.startsWith(`HTTP/1.1 ${status} `)).length,
  closed: all.filter((e) => e.closedByServer).length,
})

/** A chunked POST whose body arrives one byte at a time; `finish()` sends the last chunk and resolves with the answer. */
function trickle(port: number, path: string): { socket: Socket; sent: () => number; drip(): void; finish(): Promise<string> } {
  const socket = connect(port, '127.0.0.1')
  socket.write(`POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n`)
  let data = ''
  let sent = 0
  socket.on('data', (d) => (data += d.toString('latin1')))
  socket.on('error', () => undefined)
  return {
    socket,
    sent: () => sent,
    drip() {
      if (socket.writable) {
        socket.write('1\r\nx\r\n')
        sent++
      }
    },
    finish() {
      socket.write('0\r\n\r\n')
      return new Promise((resolve) => {
        const check = () => {
          const end = data.indexOf('\r\n\r\n')
          const length = /content-length: (\d+)/i.exec(data)?.[1]
          if (end >= 0 && length !== undefined && data.length >= end + 4 + Number(length)) resolve(data)
          else if (socket.destroyed) resolve(data)
          else setTimeout(check, 20)
        }
        check()
      })
    },
  }
}

/**
 * An upload of `size` bytes with `Expect: 100-continue`, sent as curl does: the head, then (after
 * `100 Continue`) the body, stopping at the final answer. Resolves with that answer's status line.
 */
function expectContinueUpload(port: number, path: string, size: number): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1', () => s.write(`POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: ${size}\r\nExpect: 100-continue\r\n\r\n`))
    let data = ''
    let sending = false
    let final = ''
    const timer = setTimeout(() => s.destroy(), 10_000)
    const chunk = Buffer.alloc(16 * 1024, 0x61)
    const send = (left: number) => {
      while (left > 0 && !final && !s.destroyed) {
        const n = Math.min(left, chunk.length)
        left -= n
        if (!s.write(chunk.subarray(0, n))) return void s.once('drain', () => send(left))
      }
    }
    s.on('data', (d) => {
      data += d.toString('latin1')
      for (;;) {
        const m = /^HTTP\/1\.1 (\d{3})[^\r]*\r\n/.exec(data)
        if (!m) return
        if (m[1] === '100') {
          data = data.slice(data.indexOf('\r\n\r\n') + 4)
          if (!sending) {
            sending = true
            send(size)
          }
          continue
        }
        final = m[0].trim()
        s.destroy()
        return
      }
    })
    s.on('error', () => undefined)
    s.on('close', () => {
      clearTimeout(timer)
      resolve(final || `no answer: ${JSON.stringify(data.slice(0, 80))}`)
    })
  })
}

describe('the balancer and an instance under hostile traffic', () => {
  let db: TestDatabase
  const instances = new Map<string, { proc: Proc; port: number }>()
  let balancer: Proc
  let port = 0
  let url = ''
  let watcher: MemberWatcher | null = null
  const inProcess: Balancer[] = []

  /** A balancer in this process with `opts`, once it sees both instances. */
  async function balancerWith(opts: Partial<BalancerOptions>): Promise<{ b: Balancer; url: string }> {
    if (!watcher) {
      watcher = new MemberWatcher({ databaseUrl: db.url, schema: 'chorus', log, pollMs: 500 })
      await watcher.start()
    }
    const b = new Balancer(watcher, log, { port: 0, secret, ...opts })
    inProcess.push(b)
    await b.start()
    await until(() => b.eligible.length === 2, 10_000, 'both instances eligible')
    return { b, url: `http://127.0.0.1:${b.port}` }
  }

  beforeAll(async () => {
    db = await testDatabase()
    await Promise.all(
      ['a', 'b'].map(async (id) => {
        const proc = new Proc(fixture, [], { DATABASE_URL: db.url, CHORUS_SECRET: secret, CHORUS_PRESET: 'local', CHORUS_INSTANCE_ID: id })
        const ready = await proc.waitFor((l) => l.type === 'ready', 30_000, `${id} ready`)
        instances.set(id, { proc, port: ready.port as number })
      }),
    )
    // Trusts a range the test clients are not in: their forged headers must be replaced.
    balancer = new Proc(bin, ['balancer', '--port', '0', '--database-url', db.url, '--trust-proxy', '10.0.0.0/8,192.0.2.7'], { CHORUS_LOG_LEVEL: 'warn' })
    const line = await balancer.waitFor((l) => l.type === 'text' && /balancer on http:/.test(String(l.text)), 30_000, 'the balancer listening')
    port = Number(/:(\d+) /.exec(String(line.text))![1])
    url = `http://127.0.0.1:${port}`
    const seen = new Set<string>()
    for (let i = 0; i < 400 && seen.size < 2; i++) {
      try {
        seen.add(await (await fetch(`${url}/`)).text())
      } catch {
        /* not listening yet */
      }
      await sleep(50)
    }
    expect([...seen].sort()).toEqual(['a', 'b'])
  }, 90_000)

  afterAll(async () => {
    for (const b of inProcess) await b.close()
    await watcher?.close()
    await balancer?.stop()
    await Promise.all([...instances.values()].map((i) => i.proc.stop()))
    await db?.drop()
  })

  it('an instance answers an upgrade to a path nobody serves with 404 and closes it, leaking no descriptor', async () => {
    const a = instances.get('a')!
    const base = fds(a.proc.child.pid!)
    const direct = await flood(a.port, upgradeTo('/not-stomp'), 300)
    expect(refusedAndClosed(direct, 404)).toEqual({ refused: 300, closed: 300 })
    const after = await settled(a.proc.child.pid!, base)
    console.log(`instance a: ${base.all} descriptors (${base.sockets} sockets) before 300 unserved upgrades, ${after.all} (${after.sockets}) after`)
    expect(after.all).toBeLessThanOrEqual(base.all + 6)
    expect(after.sockets).toBeLessThanOrEqual(base.sockets + 6)
  }, 90_000)

  it('the balancer tunnels only after a 101: any other answer is relayed and both sides closed, leaking no descriptor', async () => {
    const pid = balancer.child.pid!
    const base = fds(pid)
    // Refused by the instance (which closes), and by the app's own handler (which does not).
    const unserved = await flood(port, upgradeTo('/not-stomp'), 300)
    const held = await flood(port, upgradeTo('/held'), 100)
    expect(refusedAndClosed(unserved, 404)).toEqual({ refused: 300, closed: 300 })
    expect(refusedAndClosed(held, 403)).toEqual({ refused: 100, closed: 100 })
    expect(held[0]!.data).toMatch(/\r\n\r\nno way$/)
    const after = await settled(pid, base)
    console.log(`balancer: ${base.all} descriptors (${base.sockets} sockets) before 400 refused upgrades, ${after.all} (${after.sockets}) after`)
    expect(after.all).toBeLessThanOrEqual(base.all + 6)
    expect(after.sockets).toBeLessThanOrEqual(base.sockets + 6)

    // The STOMP endpoint still upgrades through the balancer.
    const ws = new WebSocket(`ws://127.0.0.1:${port}/stomp`, ['v12.stomp'])
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve())
      ws.once('error', reject)
    })
    expect(ws.protocol).toBe('v12.stomp')
    ws.close()
  }, 90_000)

  it('survives clients that leave in the middle of a body (closed or reset), and keeps serving', async () => {
    const pid = balancer.child.pid!
    const base = fds(pid)
    for (let i = 0; i < 50; i++) {
      await new Promise<void>((resolve) => {
        const socket = connect(port, '127.0.0.1', () => {
          socket.write('POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nhello')
          setTimeout(() => (i % 2 === 0 ? socket.destroy() : socket.resetAndDestroy()), 20)
        })
        socket.on('error', () => undefined).on('close', () => resolve())
      })
    }
    expect(balancer.child.exitCode).toBeNull()
    expect((await fetch(`${url}/`)).status).toBe(200)
    const after = await settled(pid, base)
    expect(after.all).toBeLessThanOrEqual(base.all + 6)
  }, 90_000)

  it('keeps answering /health/ready while 140 connections trickle chunked bodies, and delivers those bodies', async () => {
    const pid = balancer.child.pid!
    const base = fds(pid)
    const slow = Array.from({ length: 140 }, () => trickle(port, '/echo'))
    const dripper = setInterval(() => slow.forEach((t) => t.drip()), 2000)
    try {
      await sleep(500)
      slow.forEach((t) => t.drip())
      await sleep(1500)
      const health: number[] = []
      for (let i = 0; i < 5; i++) {
        const r = await fetch(`${url}/health/ready`, { signal: AbortSignal.timeout(6000) })
        await r.text()
        health.push(r.status)
        await sleep(1000)
      }
      expect(health).toEqual([200, 200, 200, 200, 200])
    } finally {
      clearInterval(dripper)
    }
    const answers = await Promise.all(slow.map(async (t) => ({ answer: await t.finish(), sent: t.sent() })))
    const wrong = answers.filter(({ answer, sent }) => !/^HTTP\/1\.1 200 /.test(answer) || !answer.endsWith(`:${sent}`))
    expect(wrong.map((w) => w.answer.slice(0, 60))).toEqual([])
    slow.forEach((t) => t.socket.destroy())
    const after = await settled(pid, base, 12)
    console.log(`balancer: ${base.all} descriptors before 140 slow bodies, ${after.all} after`)
    expect(after.all).toBeLessThanOrEqual(base.all + 12)
  }, 40_000)

  it('after uploads refused early with Expect: 100-continue, the next requests are answered', async () => {
    // The instance reads 1 KiB of each 1 MiB upload, answers 413 and reads no more. The next
    // requests are POSTs, which the balancer does not retry elsewhere: each must be answered by
    // the instance it went to.
    for (let round = 0; round < 4; round++) {
      expect(await expectContinueUpload(port, '/upload', 1024 * 1024)).toMatch(/^HTTP\/1\.1 413 /)
      const next = await Promise.all(
        Array.from({ length: 4 }, async () => {
          try {
            const r = await fetch(`${url}/echo`, { method: 'POST', body: 'hello', signal: AbortSignal.timeout(8000) })
            return `${r.status} ${await r.text()}`
          } catch (err) {
            return String(err)
          }
        }),
      )
      expect(next.filter((a) => !/^200 [ab]:5$/.test(a))).toEqual([])
    }
    // An accepted upload still goes through whole.
    const small = await fetch(`${url}/upload`, { method: 'POST', body: 'x'.repeat(1000) })
    expect(await small.text()).toBe('stored')
    const big = await fetch(`${url}/echo`, { method: 'POST', body: Buffer.alloc(3 * 1024 * 1024, 0x62) })
    expect(await big.text()).toMatch(/^[ab]:3145728$/)
  }, 60_000)

  it('replaces proxy headers forged by an untrusted client, and extends those of a trusted proxy', async () => {
    const forged = {
      'x-forwarded-for': '203.0.113.9',
      forwarded: 'for=203.0.113.9;proto=https',
      'x-real-ip': '203.0.113.9',
      'x-forwarded-proto': 'https',
      'x-forwarded-host': 'evil.example',
    }
    const seen = async (base: string) => (await (await request(`${base}/headers`, { headers: { ...forged, host: 'app.example' } })).body.json()) as Record<string, string | null>
    expect(await seen(url)).toEqual({
      'x-forwarded-for': '127.0.0.1',
      forwarded: 'for=127.0.0.1;host=app.example;proto=http',
      'x-real-ip': '127.0.0.1',
      'x-forwarded-proto': 'http',
      'x-forwarded-host': 'app.example',
    })

    // The same requests from a configured proxy keep what it says about its client.
    const trusting = await balancerWith({ trustProxy: ['127.0.0.0/8'] })
    expect(await seen(trusting.url)).toEqual({
      'x-forwarded-for': '203.0.113.9, 127.0.0.1',
      forwarded: 'for=203.0.113.9;proto=https, for=127.0.0.1;host=app.example;proto=http',
      'x-real-ip': '203.0.113.9',
      'x-forwarded-proto': 'https',
      'x-forwarded-host': 'evil.example',
    })
  })

  it('limits the requests one address has in flight (429), and refuses slow headers and a body that stalls (408)', async () => {
    const { b, url: limited } = await balancerWith({ maxRequestsPerClient: 4 })
    const slow = Array.from({ length: 4 }, () => trickle(b.port, '/echo'))
    slow.forEach((t) => t.drip())
    await until(() => slow.every((t) => t.sent() === 1), 5000, 'four bodies begun')
    // The four are in flight once the balancer has read their first byte; a fifth is refused.
    let fifth = 0
    for (let i = 0; i < 50 && fifth !== 429; i++) {
      fifth = (await fetch(`${limited}/`)).status
      if (fifth !== 429) await sleep(50)
    }
    expect(fifth).toBe(429)
    expect(b.stats.limited).toBeGreaterThan(0)
    const answers = await Promise.all(slow.map((t) => t.finish()))
    expect(answers.filter((a) => /^HTTP\/1\.1 200 /.test(a))).toHaveLength(4)
    expect((await fetch(`${limited}/`)).status).toBe(200)

    // Headers that never end, and a body that stops coming (still buffered, or streaming), get 408
    // and a closed connection.
    const { b: impatient } = await balancerWith({ bodyTimeoutMs: 1000, headersTimeoutMs: 1000 })
    const headers = await exchange(impatient.port, 'GET / HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n', 10_000)
    expect(headers.data).toMatch(/^HTTP\/1\.1 408 /)
    expect(headers.closedByServer).toBe(true)
    const small = await exchange(impatient.port, 'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc')
    expect(small.data).toMatch(/^HTTP\/1\.1 408 /)
    expect(small.closedByServer).toBe(true)
    const big = await exchange(impatient.port, `POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n${'x'.repeat(100_000)}`)
    expect(big.data).toMatch(/^HTTP\/1\.1 408 /)
    expect(big.closedByServer).toBe(true)
    expect(impatient.stats.stalled).toBe(2)
  })
})
