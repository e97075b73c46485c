import { execFile, spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Balancer } from '../../src/balancer/balancer.js'
import { MemberWatcher } from '../../src/balancer/watcher.js'
import { startDashboard } from '../../src/dashboard/dashboard.js'
import { eventually } from '../helpers/cluster.js'
import { startDashboardProcess, type DashboardProcess } from '../helpers/dashboard.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { Proc } from '../helpers/proc.js'
import { parsePrometheus, total } from '../helpers/prometheus.js'
import { SseReader, type SseEvent } from '../helpers/sse.js'

const run = promisify(execFile)
const root = new URL('../..', import.meta.url).pathname
const bin = join(root, 'bin/chorus.js')
const fixture = new URL('../fixtures/dashboard-node.mjs', import.meta.url).pathname
const eurekaFixture = new URL('../fixtures/eureka-client.mjs', import.meta.url).pathname
const password = 'dashboard-e2e-password'
const secret = 'dashboard-e2e-secret-0123456789'
const failAfterMs = 2500 // the local preset
const log = pino({ level: process.env.CHORUS_TEST_VERBOSE ? 'info' : 'silent' })

interface InstanceJson {
  id: string
  status: string
  kind: string
  epoch: number
  url: string | null
  downReason: string | null
  inRotation: boolean
  eureka: { app: string; instanceId: string; status: string } | null
  figures: { sessions: number; rssBytes: number; cpuPercent: number; eventLoopP99Ms: number } | null
}
interface SnapshotJson {
  instances: InstanceJson[]
  counts: Record<string, number>
}

async function login(base: string, pw = password): Promise<{ cookie: string; csrf: string }> {
  const res = await fetch(`${base}/login`, { method: 'POST', headers: { 'content-type': 'application/json', origin: base }, body: JSON.stringify({ password: pw }) })
  expect(res.status).toBe(200)
  const cookie = res.headers.get('set-cookie')!
  expect(cookie).toMatch(/HttpOnly/)
  expect(cookie).toMatch(/SameSite=Strict/)
  return { cookie: cookie.split(';')[0]!, csrf: ((await res.json()) as { csrf: string }).csrf }
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port
      s.close(() => resolve(port))
    })
  })
}

const snapshotOf = (e: SseEvent) => e.data as SnapshotJson
const statusIn = (s: SnapshotJson, id: string) => s.instances.find((i) => i.id === id)?.status

describe('the dashboard over a real cluster', () => {
  let db: TestDatabase
  let dash: DashboardProcess
  let session: { cookie: string; csrf: string }
  const procs = new Map<string, Proc>()
  const ports = new Map<string, number>()
  const closers: (() => Promise<unknown> | void)[] = []

  const api = async <T>(path: string, headers: Record<string, string> = { cookie: session.cookie }): Promise<T> => {
    const res = await fetch(`${dash.url}${path}`, { headers })
    expect(res.status, path).toBe(200)
    return (await res.json()) as T
  }
  const action = (path: string, headers: Record<string, string>) => fetch(`${dash.url}${path}`, { method: 'POST', headers })

  beforeAll(async () => {
    db = await testDatabase()
    await Promise.all(
      ['a', 'b', 'c'].map(async (id) => {
        const p = new Proc(fixture, [], { DATABASE_URL: db.url, CHORUS_SECRET: secret, CHORUS_PRESET: 'local', CHORUS_INSTANCE_ID: id })
        procs.set(id, p)
        ports.set(id, (await p.waitFor((l) => l.type === 'ready', 30_000, `${id} ready`)).port as number)
      }),
    )
    dash = await startDashboardProcess(db.url, password)
    session = await login(dash.url)
  })

  afterAll(async () => {
    for (const c of closers.reverse()) await c()
    dash?.child.kill('SIGTERM')
    await Promise.all([...procs.values()].map((p) => p.stop()))
    await db?.drop()
  })

  it('lists the three instances in the API and the live stream, and streams a kill -9 instance down within failAfter', async () => {
    const listed = await eventually(async () => {
      const s = await api<SnapshotJson>('/api/instances')
      return s.instances.filter((i) => i.status === 'up' && i.figures).length === 3 ? s : null
    }, 'three reporting instances', 15_000, 200)
    expect(listed.instances.map((i) => [i.id, i.status, i.kind])).toEqual([['a', 'up', 'chorus'], ['b', 'up', 'chorus'], ['c', 'up', 'chorus']])
    for (const i of listed.instances) {
      expect(i.url).toBe(`http://127.0.0.1:${ports.get(i.id)}`)
      expect(i.figures!.rssBytes).toBeGreaterThan(0)
      expect(i.epoch).toBeGreaterThan(0)
    }
    const page = await fetch(`${dash.url}/`, { headers: { cookie: session.cookie } })
    expect(page.status).toBe(200)
    const html = await page.text()
    expect(html).toContain('/assets/app.js')
    expect(html).toContain('id="instances"')
    expect((await fetch(`${dash.url}/assets/app.js`)).headers.get('content-type')).toMatch(/javascript/)

    const { reader, status, contentType } = await SseReader.open(`${dash.url}/api/stream`, { cookie: session.cookie })
    closers.push(() => reader.close())
    expect(status).toBe(200)
    expect(contentType).toMatch(/^text\/event-stream/)
    await reader.next((e) => e.event === 'member-events' && (e.data as { instanceId: string }[]).some((x) => x.instanceId === 'c'), 5000, 'membership events')
    await reader.next((e) => e.event === 'snapshot' && ['a', 'b', 'c'].every((id) => statusIn(snapshotOf(e), id) === 'up'), 5000, 'a snapshot with a, b, c up')

    const killedAt = Date.now()
    procs.get('c')!.kill('SIGKILL')
    const down = await reader.next((e) => e.event === 'snapshot' && statusIn(snapshotOf(e), 'c') === 'down', 15_000, 'c down on the stream')
    const tookMs = down.at - killedAt
    console.log(`kill -9 → the dashboard stream shows c down after ${tookMs} ms (failAfter ${failAfterMs} ms)`)
    expect(snapshotOf(down).instances.find((i) => i.id === 'c')!.downReason).toBe('expired')
    expect(tookMs).toBeLessThanOrEqual(failAfterMs + 1500)
    await reader.next(
      (e) => e.event === 'member-events' && (e.data as { instanceId: string; kind: string; reason: string }[]).some((x) => x.instanceId === 'c' && x.kind === 'down' && x.reason === 'expired'),
      5000,
      'a "down" membership event for c',
    )
    const events = await api<{ events: { instanceId: string; kind: string }[] }>('/api/events')
    expect(events.events.filter((e) => e.instanceId === 'c').map((e) => e.kind)).toEqual(['joined', 'down'])
  })

  it('answers 401 to the page, the API and actions without the password, and refuses cross-site actions', async () => {
    const anon = await fetch(`${dash.url}/`)
    expect(anon.status).toBe(401)
    expect(await anon.text()).toContain('name="password"')
    expect((await fetch(`${dash.url}/`, { headers: { cookie: 'chorus_dashboard=9999999999.forged.signature' } })).status).toBe(401)
    for (const path of ['/api/instances', '/api/overview', '/api/stream', '/api/jobs', '/api/events']) expect((await fetch(`${dash.url}${path}`)).status, path).toBe(401)
    expect((await fetch(`${dash.url}/api/instances`, { headers: { authorization: 'Bearer chd_wrong' } })).status).toBe(401)
    expect((await fetch(`${dash.url}/metrics`)).status).toBe(401)
    const eurekaAnon = await fetch(`${dash.url}/eureka/apps`)
    expect(eurekaAnon.status).toBe(401)
    expect(eurekaAnon.headers.get('www-authenticate')).toMatch(/^Basic/)
    const wrongBasic = `Basic ${Buffer.from('admin:not-the-password').toString('base64')}`
    expect((await fetch(`${dash.url}/eureka/apps`, { headers: { authorization: wrongBasic } })).status).toBe(401)
    expect((await action('/api/instances/a/drain', {})).status).toBe(401)
    expect((await action('/api/instances/a/drain', { authorization: 'Bearer chd_wrong' })).status).toBe(401)
    expect((await action('/api/jobs/1/retry', {})).status).toBe(401)
    const wrong = await fetch(`${dash.url}/login`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'password=nope-nope-nope' })
    expect(wrong.status).toBe(401)
    expect(await wrong.text()).toContain('wrong password')

    // The bearer token works for the API without a cookie.
    expect((await fetch(`${dash.url}/api/instances`, { headers: { authorization: `Bearer ${dash.token}` } })).status).toBe(200)

    // A signed-in browser tricked by another site: the cookie alone is not enough.
    const crossSite = await action('/api/instances/a/drain', { cookie: session.cookie, origin: 'https://evil.example', 'x-csrf-token': session.csrf })
    expect(crossSite.status).toBe(403)
    expect(((await crossSite.json()) as { error: { code: string } }).error.code).toBe('CHORUS_ERR_DASHBOARD_CROSS_SITE')
    expect((await action('/api/instances/a/drain', { cookie: session.cookie, origin: dash.url })).status).toBe(403)
    expect((await action('/api/instances/a/drain', { cookie: session.cookie, 'x-csrf-token': session.csrf })).status).toBe(403)
    expect((await action('/api/instances/a/drain', { cookie: session.cookie, referer: 'https://evil.example/page', 'x-csrf-token': session.csrf })).status).toBe(403)
    const cross = await fetch(`${dash.url}/login`, { method: 'POST', headers: { 'content-type': 'application/json', origin: 'https://evil.example' }, body: JSON.stringify({ password }) })
    expect(cross.status).toBe(403)
    const [row] = await db.sql<{ status: string }[]>`select status from members where instance_id = 'a'`
    expect(row!.status).toBe('up')
  })

  it('throttles repeated failures from one address: after five, even the right password waits', async () => {
    const local = await startDashboard({ databaseUrl: db.url, password, port: 0, log, throttle: { freeFailures: 5, baseDelayMs: 60_000 } })
    closers.push(() => local.close())
    const attempt = (pw: string) => fetch(`${local.url}/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ password: pw }) })
    for (let i = 1; i <= 5; i++) expect((await attempt(`wrong-${i}-password`)).status, `attempt ${i}`).toBe(401)
    const blocked = await attempt(password)
    expect(blocked.status).toBe(429)
    expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThan(0)
    expect(((await blocked.json()) as { error: { code: string } }).error.code).toBe('CHORUS_ERR_DASHBOARD_THROTTLED')
    expect((await fetch(`${local.url}/api/instances`, { headers: { authorization: `Bearer ${local.token}` } })).status).toBe(429)
    const basic = `Basic ${Buffer.from(`admin:${password}`).toString('base64')}`
    expect((await fetch(`${local.url}/eureka/apps`, { headers: { authorization: basic } })).status).toBe(429)
  })

  it('drains the chosen instance on request: its member row goes draining and the balancer stops sending to it', async () => {
    const watcher = new MemberWatcher({ databaseUrl: db.url, schema: 'chorus', log, pollMs: 500 })
    await watcher.start()
    const balancer = new Balancer(watcher, log, { port: 0, strategy: 'round-robin', secret })
    await balancer.start()
    closers.push(async () => {
      await balancer.close()
      await watcher.close()
    })
    const through = async (n: number) => {
      const seen: Record<string, number> = {}
      for (let i = 0; i < n; i++) {
        const id = await (await fetch(`http://127.0.0.1:${balancer.port}/`)).text()
        seen[id] = (seen[id] ?? 0) + 1
      }
      return seen
    }
    await eventually(() => watcher.members.filter((m) => m.status === 'up').length === 2, 'a and b up in the balancer', 10_000)
    expect(Object.keys(await through(10)).sort()).toEqual(['a', 'b'])

    const res = await action('/api/instances/b/drain', { cookie: session.cookie, origin: dash.url, 'x-csrf-token': session.csrf })
    expect(res.status).toBe(200)
    expect(((await res.json()) as { instance: InstanceJson }).instance.status).toBe('draining')
    const [row] = await db.sql<{ status: string }[]>`select status from members where instance_id = 'b'`
    expect(row!.status).toBe('draining')
    await procs.get('b')!.waitFor((l) => l.type === 'state' && l.to === 'draining', 5000, 'b draining')
    await eventually(() => watcher.members.find((m) => m.id === 'b')?.status === 'draining', 'the balancer sees b draining', 10_000)
    expect(await through(12)).toEqual({ a: 12 })
    const s = await api<SnapshotJson>('/api/instances')
    expect(s.instances.find((i) => i.id === 'b')).toMatchObject({ status: 'draining', inRotation: false })
    expect(s.instances.find((i) => i.id === 'a')).toMatchObject({ status: 'up', inRotation: true })
  })

  it('serves Prometheus text that parses strictly and moves when work happens, on instances and on the dashboard', async () => {
    const a = procs.get('a')!
    const scrape = async () => {
      const res = await fetch(`http://127.0.0.1:${ports.get('a')}/metrics`)
      expect(res.status).toBe(200)
      expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/)
      return parsePrometheus(await res.text())
    }
    const before = await scrape()
    for (const name of ['chorus_members', 'chorus_bus_messages_published_total', 'chorus_locks_held', 'chorus_jobs_running', 'chorus_realtime_sessions', 'chorus_http_requests_total', 'process_cpu_user_seconds_total']) {
      expect(before.has(name), name).toBe(true)
    }
    expect(before.get('chorus_bus_messages_published_total')!.type).toBe('counter')
    expect(total(before, 'chorus_members', { status: 'up' })).toBe(1)
    expect(total(before, 'chorus_members', { status: 'draining' })).toBe(1)

    a.send({ cmd: 'publish', count: 3, tag: 'm1' })
    await a.waitFor((l) => l.type === 'published' && l.tag === 'm1', 5000, 'published')
    a.send({ cmd: 'enqueue', count: 4, tag: 'm2' })
    const { ids } = (await a.waitFor((l) => l.type === 'enqueued' && l.tag === 'm2', 5000, 'enqueued')) as unknown as { ids: string[] }
    for (const id of ids) await a.waitFor((l) => l.type === 'job:completed' && l.id === id, 10_000, `job ${id} completed`)
    a.send({ cmd: 'cache', tag: 'm3' })
    await a.waitFor((l) => l.type === 'cached' && l.tag === 'm3', 5000, 'cached')

    const after = await scrape()
    expect(total(after, 'chorus_bus_messages_published_total') - total(before, 'chorus_bus_messages_published_total')).toBeGreaterThanOrEqual(3)
    expect(total(after, 'chorus_jobs_completed_total', { name: 'work' }) - total(before, 'chorus_jobs_completed_total', { name: 'work' })).toBe(4)
    expect(total(after, 'chorus_job_duration_seconds_count', { name: 'work' }) - total(before, 'chorus_job_duration_seconds_count', { name: 'work' })).toBe(4)
    expect(total(after, 'chorus_jobs_enqueued_total', { name: 'work' })).toBeGreaterThanOrEqual(4)
    expect(total(after, 'chorus_http_requests_total', { method: 'GET', code: '200' })).toBeGreaterThan(total(before, 'chorus_http_requests_total', { method: 'GET', code: '200' }))
    expect(total(after, 'chorus_cache_hits_total', { cache: 'greetings' })).toBeGreaterThanOrEqual(1)
    expect(total(after, 'chorus_cache_misses_total', { cache: 'greetings' })).toBeGreaterThanOrEqual(1)

    const cluster = await fetch(`${dash.url}/metrics`, { headers: { authorization: `Bearer ${dash.token}` } })
    expect(cluster.status).toBe(200)
    const families = parsePrometheus(await cluster.text())
    expect(total(families, 'chorus_cluster_members', { status: 'up', kind: 'chorus' })).toBe(1)
    expect(total(families, 'chorus_cluster_members', { status: 'draining', kind: 'chorus' })).toBe(1)
    expect(total(families, 'chorus_cluster_members', { status: 'down', kind: 'chorus' })).toBe(1)
    await eventually(async () => {
      const f = parsePrometheus(await (await fetch(`${dash.url}/metrics`, { headers: { authorization: `Bearer ${dash.token}` } })).text())
      return total(f, 'chorus_cluster_jobs', { name: 'work', state: 'completed' }) >= 4
    }, 'the completed jobs in the cluster gauges', 10_000, 250)
  })

  it('shows a failed job with its error and retries it on request', async () => {
    const a = procs.get('a')!
    a.send({ cmd: 'enqueue', count: 1, fail: true, tag: 'f1' })
    const { ids } = (await a.waitFor((l) => l.type === 'enqueued' && l.tag === 'f1', 5000, 'enqueued')) as unknown as { ids: string[] }
    const id = ids[0]!
    await a.waitFor((l) => l.type === 'job:failed' && l.id === id, 10_000, 'the job failed')
    const jobs = await eventually(async () => {
      const j = await api<{ jobs: { name: string; failed: number }[]; failures: { id: string; error: string; state: string }[] }>('/api/jobs')
      return j.failures.some((f) => f.id === id) ? j : null
    }, 'the failure in /api/jobs', 10_000, 250)
    expect(jobs.failures.find((f) => f.id === id)).toMatchObject({ error: expect.stringContaining('boom 0'), state: 'failed' })
    expect(jobs.jobs.find((j) => j.name === 'work')!.failed).toBeGreaterThanOrEqual(1)
    const failedBefore = a.lines.filter((l) => l.type === 'job:failed' && l.id === id).length
    const res = await action(`/api/jobs/${id}/retry`, { cookie: session.cookie, origin: dash.url, 'x-csrf-token': session.csrf })
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ id, retried: true })
    await eventually(() => a.lines.filter((l) => l.type === 'job:failed' && l.id === id).length > failedBefore, 'the retried job ran again', 10_000)
  })

  it('is a Eureka registry for eureka-js-client: register, renew, list, status, deregister, and down when renewals stop', async () => {
    const eurekaUrl = `${dash.url.replace('http://', `http://admin:${password}@`)}/eureka/apps/`
    const start = (instanceId: string) => {
      const p = new Proc(eurekaFixture, [], { EUREKA_URL: eurekaUrl, EUREKA_INSTANCE_ID: instanceId, EUREKA_LEASE_SEC: '2', EUREKA_HEARTBEAT_MS: '400' })
      closers.push(() => p.stop())
      return p
    }
    const one = start('orders-1')
    await one.waitFor((l) => l.type === 'registered', 15_000, 'registered')
    await one.waitFor((l) => l.type === 'started', 15_000, 'started')
    await one.waitFor((l) => l.type === 'heartbeat', 5000, 'a renewal')
    const row = await eventually(async () => (await api<SnapshotJson>('/api/instances')).instances.find((i) => i.id === 'ORDERS:orders-1'), 'the Eureka row in the dashboard', 5000, 100)
    expect(row).toMatchObject({ kind: 'eureka', status: 'up', url: 'http://127.0.0.1:9090/', eureka: { app: 'ORDERS', instanceId: 'orders-1', status: 'UP' } })

    const { stdout } = await run(process.execPath, [bin, 'status', '--json', '--database-url', db.url], { env: { ...process.env, CHORUS_LOG_LEVEL: 'warn' } })
    const listed = (JSON.parse(stdout) as { id: string; kind: string; status: string }[]).find((r) => r.id === 'ORDERS:orders-1')
    expect(listed).toMatchObject({ kind: 'eureka', status: 'up' })

    const basic = { authorization: `Basic ${Buffer.from(`admin:${password}`).toString('base64')}` }
    const xml = await fetch(`${dash.url}/eureka/apps`, { headers: basic })
    expect(xml.headers.get('content-type')).toMatch(/^application\/xml/)
    const body = await xml.text()
    expect(body).toMatch(/^<\?xml version="1.0"/)
    expect(body).toContain('<application><name>ORDERS</name><instance><instanceId>orders-1</instanceId>')
    expect(body).toContain('<port enabled="true">9090</port>')
    expect(body).toContain('<name>CHORUS</name>')
    const json = (await (await fetch(`${dash.url}/eureka/v2/apps/orders`, { headers: { ...basic, accept: 'application/json' } })).json()) as {
      application: { name: string; instance: { instanceId: string; status: string; leaseInfo: { durationInSecs: number }; metadata: Record<string, string> }[] }
    }
    expect(json.application.name).toBe('ORDERS')
    expect(json.application.instance[0]).toMatchObject({ instanceId: 'orders-1', status: 'UP', leaseInfo: { durationInSecs: 2 }, metadata: { zone: 'test' } })
    await one.waitFor((l) => l.type === 'registry-updated', 5000, 'a registry fetch')
    one.send({ cmd: 'lookup', app: 'ORDERS' })
    await eventually(() => one.lines.some((l) => l.type === 'lookup' && (l.instances as { instanceId: string }[]).some((i) => i.instanceId === 'orders-1')), 'the client finds itself in the registry', 5000)

    expect((await fetch(`${dash.url}/eureka/apps/ORDERS/orders-1/status?value=OUT_OF_SERVICE`, { method: 'PUT', headers: basic })).status).toBe(200)
    await eventually(async () => (await api<SnapshotJson>('/api/instances')).instances.find((i) => i.id === 'ORDERS:orders-1')?.status === 'draining', 'out of service shows as draining', 5000, 100)
    expect((await fetch(`${dash.url}/eureka/apps/ORDERS/orders-1/status`, { method: 'DELETE', headers: basic })).status).toBe(200)
    await eventually(async () => (await api<SnapshotJson>('/api/instances')).instances.find((i) => i.id === 'ORDERS:orders-1')?.status === 'up', 'back up', 5000, 100)

    one.send({ cmd: 'stop' })
    await one.waitFor((l) => l.type === 'deregistered', 5000, 'deregistered')
    const [left] = await db.sql<{ status: string; down_reason: string }[]>`select status, down_reason from members where instance_id = 'ORDERS:orders-1'`
    expect(left).toEqual({ status: 'down', down_reason: 'left' })

    const two = start('orders-2')
    await two.waitFor((l) => l.type === 'heartbeat', 15_000, 'orders-2 renewing')
    const killedAt = Date.now()
    two.kill('SIGKILL')
    const gone = await eventually(async () => {
      const i = (await api<SnapshotJson>('/api/instances')).instances.find((x) => x.id === 'ORDERS:orders-2')
      return i?.status === 'down' ? i : null
    }, 'orders-2 declared down', 15_000, 100)
    console.log(`eureka client killed → declared down after ${Date.now() - killedAt} ms (lease 2 s)`)
    expect(gone.downReason).toBe('expired')
    expect((await fetch(`${dash.url}/eureka/apps/ORDERS/orders-2`, { method: 'PUT', headers: basic })).status).toBe(404)
  })

  it('is started by chorus up, which prints its URL and a generated password', async () => {
    const other = await testDatabase()
    closers.push(() => other.drop())
    const base = await freePort()
    const env: Record<string, string | undefined> = { ...process.env, NO_COLOR: '1', CHORUS_LOG_LEVEL: 'warn' }
    delete env.CHORUS_DASHBOARD_PASSWORD
    const up = spawn(process.execPath, [bin, 'up', '--instances', '1', '--app', join(root, 'examples/hello/server.mjs'), '--port', String(base), '--no-balancer', '--dashboard-port', '0', '--database-url', other.url], {
      env: env as NodeJS.ProcessEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: root,
    })
    let output = ''
    up.stdout.on('data', (c: Buffer) => (output += c.toString()))
    up.stderr.on('data', (c: Buffer) => (output += c.toString()))
    const exited = new Promise<number | null>((resolve) => up.once('exit', (code) => resolve(code)))
    closers.push(() => void (up.exitCode === null && up.kill('SIGKILL')))
    await eventually(() => /dashboard on (http:\/\/\S+)\s+password: (\S+)/.test(output), `the dashboard line; output:\n${output}`, 30_000, 50)
    const [, url, generated] = /dashboard on (http:\/\/\S+)\s+password: (\S+)/.exec(output)!
    expect(generated!.length).toBeGreaterThanOrEqual(16)
    const s = await login(url!, generated!)
    await eventually(async () => {
      const res = await fetch(`${url}/api/instances`, { headers: { cookie: s.cookie } })
      const body = (await res.json()) as SnapshotJson
      return body.instances.some((i) => i.id === 'instance-1' && i.status === 'up')
    }, 'instance-1 on the dashboard of chorus up', 20_000, 200)
    up.kill('SIGINT')
    expect(await exited).toBe(0)
  })
})
