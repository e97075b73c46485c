import { Client, type IMessage } from '@stomp/stompjs'
import { connect } from 'node:net'
import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocket } from 'ws'
import { Balancer, type Strategy } from '../../src/balancer/balancer.js'
import { MemberWatcher } from '../../src/balancer/watcher.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { Proc } from '../helpers/proc.js'
import { until } from '../helpers/stomp.js'

const fixture = new URL('../fixtures/realtime-node.mjs', import.meta.url).pathname
const secret = 'balancer-e2e-secret-0123456789'
const log = pino({ level: process.env.CHORUS_TEST_VERBOSE ? 'info' : 'silent' })

describe('the built-in balancer over real instances', () => {
  let db: TestDatabase
  let watcher: MemberWatcher
  const procs = new Map<string, Proc>()
  const ports = new Map<string, number>()
  const balancers: Balancer[] = []

  async function start(id: string) {
    const p = new Proc(fixture, [], { DATABASE_URL: db.url, CHORUS_SECRET: secret, CHORUS_PRESET: 'local', CHORUS_INSTANCE_ID: id })
    procs.set(id, p)
    ports.set(id, (await p.waitFor((l) => l.type === 'ready', 30_000, `${id} ready`)).port as number)
  }

  async function balancer(strategy: Strategy, sticky = false) {
    const b = new Balancer(watcher, log, { port: 0, strategy, sticky, secret, ejectMs: 3000 })
    await b.start()
    balancers.push(b)
    return { b, url: `http://127.0.0.1:${b.port}` }
  }

  beforeAll(async () => {
    db = await testDatabase()
    await Promise.all(['a', 'b', 'c'].map(start))
    watcher = new MemberWatcher({ databaseUrl: db.url, schema: 'chorus', log, pollMs: 500 })
    await watcher.start()
    await until(() => watcher.members.length === 3, 10_000, 'three members')
  })

  afterAll(async () => {
    for (const b of balancers) await b.close()
    await watcher?.close()
    await Promise.all([...procs.values()].map((p) => p.stop()))
    await db?.drop()
  })

  const count = async (id: string) => Number(await (await fetch(`http://127.0.0.1:${ports.get(id)}/count`)).text())

  it('spreads requests over the three instances with each strategy, and sticky pins a client', async () => {
    for (const strategy of ['round-robin', 'least-connections'] as const) {
      const { url } = await balancer(strategy)
      const seen: Record<string, number> = {}
      await Promise.all(Array.from({ length: 30 }, async () => {
        const id = await (await fetch(`${url}/`)).text()
        seen[id] = (seen[id] ?? 0) + 1
      }))
      expect(Object.keys(seen).sort(), strategy).toEqual(['a', 'b', 'c'])
      if (strategy === 'round-robin') expect(Object.values(seen)).toEqual([10, 10, 10])
    }
    const { url } = await balancer('round-robin', true)
    const first = await fetch(`${url}/`)
    const cookie = first.headers.get('set-cookie')!.split(';')[0]!
    const pinned = await first.text()
    for (let i = 0; i < 10; i++) expect(await (await fetch(`${url}/`, { headers: { cookie } })).text()).toBe(pinned)
    const forged = `chorus_affinity=${pinned === 'a' ? 'b' : 'a'}.forged`
    const others = new Set<string>()
    for (let i = 0; i < 6; i++) others.add(await (await fetch(`${url}/`, { headers: { cookie: forged } })).text())
    expect(others.size).toBeGreaterThan(1)
  })

  it('sets X-Forwarded-For and refuses smuggling shapes and oversized headers before any instance sees them', async () => {
    const { url, b } = await balancer('round-robin')
    const res = await fetch(`${url}/`)
    expect(res.headers.get('x-forwarded-for-seen')).toBe('127.0.0.1')
    const before = (await Promise.all(['a', 'b', 'c'].map(count))).reduce((x, y) => x + y)
    const raw = (text: string) =>
      new Promise<string>((resolve) => {
        const s = connect(b.port, '127.0.0.1', () => s.write(text))
        let out = ''
        s.on('data', (d) => (out += d.toString()))
        s.on('close', () => resolve(out))
        s.on('error', () => resolve(out))
      })
    const both = await raw('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n')
    const conflicting = await raw('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!')
    const huge = await raw(`GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(32 * 1024)}\r\n\r\n`)
    expect(both).toMatch(/^HTTP\/1.1 400/)
    expect(conflicting).toMatch(/^HTTP\/1.1 400/)
    expect(huge).toMatch(/^HTTP\/1.1 431/)
    const after = (await Promise.all(['a', 'b', 'c'].map(count))).reduce((x, y) => x + y)
    expect(after).toBe(before)
  })

  it('tunnels a STOMP WebSocket, and the client reconnects through the balancer when its instance dies', async () => {
    const { url } = await balancer('round-robin', true)
    const wsUrl = url.replace('http', 'ws') + '/stomp'
    const got: IMessage[] = []
    const servedBy: string[] = []
    let lastId: string | undefined
    const client = new Client({
      webSocketFactory: () => new WebSocket(wsUrl, ['v12.stomp']) as unknown as globalThis.WebSocket,
      reconnectDelay: 200,
      debug: () => undefined,
    })
    client.onConnect = (frame) => {
      servedBy.push(frame.headers.session ?? '')
      client.subscribe('/topic/lb', (m) => {
        got.push(m)
        lastId = m.headers['message-id']
      }, lastId ? { 'chorus-last-id': lastId } : {})
    }
    client.activate()
    await until(() => servedBy.length === 1, 10_000, 'connected through the balancer')
    let holders: { instance_id: string }[] = []
    for (let i = 0; i < 50 && holders.length !== 1; i++) {
      holders = await db.sql<{ instance_id: string }[]>`select instance_id from realtime_presence where sessions > 0`
      if (holders.length !== 1) await new Promise((r) => setTimeout(r, 100))
    }
    expect(holders).toHaveLength(1)
    const victim = holders[0]!.instance_id
    const publisher = procs.get(['a', 'b', 'c'].find((id) => id !== victim)!)!
    publisher.send({ cmd: 'publish', destination: '/topic/lb', count: 5 })
    await until(() => got.length === 5, 10_000, 'first messages')
    procs.get(victim)!.kill('SIGKILL')
    await until(() => servedBy.length === 2, 20_000, 'reconnected through the balancer')
    publisher.send({ cmd: 'publish', destination: '/topic/lb', count: 5, start: 5 })
    await until(() => got.length === 10, 10_000, 'messages after reconnect')
    expect(got.map((m) => m.body)).toEqual([...Array(10).keys()].map(String))
    await client.deactivate()
    procs.delete(victim)
    await start(victim)
    await until(() => watcher.members.length === 3, 10_000, 'victim back')
  })

  it('after a kill -9 under a steady GET load, no GET fails', async () => {
    const { url, b } = await balancer('round-robin')
    let ok = 0
    let failed = 0
    let stop = false
    const workers = Array.from({ length: 4 }, async () => {
      while (!stop) {
        try {
          const r = await fetch(`${url}/`)
          await r.text()
          if (r.status === 200) ok++
          else failed++
        } catch {
          failed++
        }
      }
    })
    await new Promise((r) => setTimeout(r, 500))
    procs.get('c')!.kill('SIGKILL')
    await new Promise((r) => setTimeout(r, 3500))
    stop = true
    await Promise.all(workers)
    console.log(`steady GET load through kill -9: ${ok} ok, ${failed} failed, ${b.stats.retries} retried on another instance`)
    expect(failed).toBe(0)
    expect(ok).toBeGreaterThan(50)
    procs.delete('c')
    await start('c')
    await until(() => watcher.members.length === 3, 10_000, 'c back')
  })

  it('lets in-flight requests to a draining instance finish and sends new ones elsewhere', async () => {
    const { url } = await balancer('round-robin', true)
    await until(() => watcher.members.filter((m) => m.status === 'up').length === 3, 10_000, 'three up')
    const drainee = 'b'
    let cookie = ''
    for (let i = 0; i < 10 && !cookie; i++) {
      const r = await fetch(`${url}/`)
      if ((await r.text()) === drainee) cookie = r.headers.get('set-cookie')!.split(';')[0]!
    }
    expect(cookie).not.toBe('')
    const slow = fetch(`${url}/slow?ms=2500`, { headers: { cookie } })
    await new Promise((r) => setTimeout(r, 300))
    procs.get(drainee)!.send({ cmd: 'close' })
    await until(() => !watcher.members.some((m) => m.id === drainee && m.status === 'up'), 10_000, 'drainee not up')
    const next = await Promise.all(Array.from({ length: 12 }, async () => (await fetch(`${url}/`)).text()))
    expect(next).not.toContain(drainee)
    const repinned = await fetch(`${url}/`, { headers: { cookie } })
    expect(await repinned.text()).not.toBe(drainee)
    const res = await slow
    expect(res.status).toBe(200)
    expect(await res.text()).toBe(drainee)
  })
})
