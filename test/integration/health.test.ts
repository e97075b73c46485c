// Health that tells the truth: readiness turns false when an instance loses its database and true
// again when it comes back (the database cut by a real TCP proxy), the balancer sends requests only
// to ready instances, the handlers answer for Node http, Express and Fastify, and close() ends
// within its deadline while the database hangs.
import express from 'express'
import Fastify from 'fastify'
import { createServer, type Server } from 'node:http'
import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Balancer } from '../../src/balancer/balancer.js'
import { MemberWatcher } from '../../src/balancer/watcher.js'
import type { Cluster } from '../../src/cluster.js'
import { eventually, member, record, secret } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { startProxy, type Proxy } from '../helpers/proxy.js'

const log = pino({ level: 'silent' })

/** An app that answers its instance id on `/` and mounts the cluster's health handler; `notReady` forces 503 on readiness. */
async function serve(cluster: () => Cluster): Promise<{ server: Server; port: number; notReady: { on: boolean } }> {
  const notReady = { on: false }
  const server = createServer((req, res) => {
    if (req.url === '/health/ready' && notReady.on) return void res.writeHead(503).end()
    if (req.url?.startsWith('/health/')) return cluster().health.handler(req, res)
    res.end(cluster().instanceId)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return { server, port: (server.address() as { port: number }).port, notReady }
}

describe('cluster health', () => {
  let db: TestDatabase
  let proxy: Proxy
  let a: Cluster
  let b: Cluster
  const servers: Server[] = []
  let appA: Awaited<ReturnType<typeof serve>>
  let appB: Awaited<ReturnType<typeof serve>>

  beforeAll(async () => {
    db = await testDatabase()
    proxy = await startProxy(db.url)
    // The apps listen first, so each member advertises where its app is.
    appA = await serve(() => a)
    appB = await serve(() => b)
    servers.push(appA.server, appB.server)
    a = await member(proxy.url, 'health-a', { advertiseUrl: `http://127.0.0.1:${appA.port}` })
    b = await member(db.url, 'health-b', { advertiseUrl: `http://127.0.0.1:${appB.port}` })
  })

  afterAll(async () => {
    for (const s of servers) s.closeAllConnections?.()
    for (const s of servers) await new Promise((r) => s.close(r))
    await a?.close()
    await b?.close()
    await proxy?.close()
    await db?.drop()
  })

  it('is live and ready once joined, as data and over HTTP', async () => {
    expect(a.health.live().status).toBe('pass')
    const ready = a.health.ready()
    expect(ready.status).toBe('pass')
    expect(ready.instanceId).toBe('health-a')
    expect(Object.keys(ready.checks).sort()).toEqual(['database', 'draining', 'isolated', 'joined'])
    const res = await fetch(`http://127.0.0.1:${appA.port}/health/ready`)
    expect(res.status).toBe(200)
    expect(((await res.json()) as { status: string }).status).toBe('pass')
    expect((await fetch(`http://127.0.0.1:${appA.port}/health/live`)).status).toBe(200)
  })

  it('turns not ready (state isolated) when the database goes away, and ready again when it is back', async () => {
    const states = record(a, 'cluster:state:change')
    const cut = Date.now()
    proxy.refuse()
    await eventually(async () => (await fetch(`http://127.0.0.1:${appA.port}/health/ready`)).status === 503, 'readiness 503', 15_000)
    const notReadyAfter = Date.now() - cut
    expect(a.state).toBe('isolated')
    const report = a.health.ready()
    expect(report.status).toBe('fail')
    expect(report.checks.isolated!.ok).toBe(false)
    // Still live: a restart would not bring the database back.
    expect((await fetch(`http://127.0.0.1:${appA.port}/health/live`)).status).toBe(200)
    const back = Date.now()
    proxy.heal()
    await eventually(async () => (await fetch(`http://127.0.0.1:${appA.port}/health/ready`)).status === 200, 'readiness 200 again', 15_000)
    const readyAfter = Date.now() - back
    expect(a.state).toBe('up')
    expect(states.map((s) => `${s.from}->${s.to}`)).toEqual(['up->isolated', 'isolated->up'])
    console.log(`readiness: false ${notReadyAfter} ms after the database went away (failAfterMs ${a.options.failAfterMs}), true ${readyAfter} ms after it came back`)
  })

  it('lets the balancer send requests only to ready instances', async () => {
    const watcher = new MemberWatcher({ databaseUrl: db.url, schema: 'chorus', log, pollMs: 500 })
    await watcher.start()
    const balancer = new Balancer(watcher, log, { port: 0, secret })
    await balancer.start()
    try {
      await eventually(() => watcher.members.filter((m) => m.status === 'up').length === 2, 'both members in the balancer view')
      const url = `http://127.0.0.1:${balancer.port}/`
      const spread = async (n: number) => {
        const seen: Record<string, number> = {}
        for (let i = 0; i < n; i++) {
          const res = await fetch(url)
          expect(res.status).toBe(200)
          const id = await res.text()
          seen[id] = (seen[id] ?? 0) + 1
        }
        return seen
      }
      await eventually(async () => Object.keys(await spread(6)).length === 2, 'requests reach both instances')
      appA.notReady.on = true
      // The probe runs every second; once it has seen the 503, every request goes to b.
      await eventually(async () => Object.keys(await spread(6)).join() === 'health-b', 'only the ready instance gets requests', 10_000, 200)
      expect(await spread(20)).toEqual({ 'health-b': 20 })
      appA.notReady.on = false
      await eventually(async () => 'health-a' in (await spread(6)), 'the instance gets requests again once ready', 10_000, 200)
    } finally {
      await balancer.close()
      await watcher.close()
    }
  })

  it('answers through Express middleware and a Fastify plugin', async () => {
    const app = express()
    app.use(a.health.handler)
    app.get('/other', (_req, res) => void res.send('other'))
    const server = app.listen(0, '127.0.0.1')
    servers.push(server)
    await new Promise((r) => server.once('listening', r))
    const port = (server.address() as { port: number }).port
    expect((await fetch(`http://127.0.0.1:${port}/health/ready`)).status).toBe(200)
    expect(await (await fetch(`http://127.0.0.1:${port}/other`)).text()).toBe('other')

    const fastify = Fastify()
    a.health.fastify(fastify)
    const live = await fastify.inject({ method: 'GET', url: '/health/live' })
    expect(live.statusCode).toBe(200)
    expect(live.json().status).toBe('pass')
    await fastify.close()
  })

  it('refuses a cluster state transition its machine does not allow', () => {
    expect(b.state).toBe('up')
    expect(() => b.setState('starting')).toThrow('cluster cannot go from "up" to "starting"')
    expect(b.state).toBe('up')
  })

  it('closes within closeTimeoutMs while the database hangs, and says what it could not do', async () => {
    const hungProxy = await startProxy(db.url)
    const lines: string[] = []
    const logger = pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) })
    const c = await member(hungProxy.url, 'health-c', { closeTimeoutMs: 1500, logger })
    try {
      hungProxy.hang()
      const closing = c.close()
      const outcome = await Promise.race([closing.then(() => 'closed'), new Promise((r) => setTimeout(r, 10_000, 'still closing'))])
      expect(outcome).toBe('closed')
      expect(c.state).toBe('stopped')
      expect(lines.some((l) => l.includes('close did not finish within 1500 ms'))).toBe(true)
    } finally {
      await hungProxy.close()
    }
  })
})
