import { createServer, type Server } from 'node:http'
import { createRequire } from 'node:module'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { z } from 'zod'
import type { Cluster } from '../../src/cluster.js'
import { Config } from '../../src/config/config.js'
import { Access } from '../../src/dashboard/auth.js'
import { accessGuard, configRoutes } from '../../src/dashboard/config-routes.js'
import { Throttle } from '../../src/dashboard/throttle.js'
import { eventually, member, secret } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

// The npm Spring Cloud Config client, as a Node service on a Spring stack would use it.
const springClient = createRequire(import.meta.url)('cloud-config-client') as {
  load(o: { endpoint: string; name: string; profiles?: string[]; label?: string; auth?: { user: string; pass: string } }): Promise<{ get(key: string): unknown; properties: Record<string, unknown> }>
}

const PASSWORD = 'dashboard-password-int'
const files = {
  'application.yml': 'quiz:\n  maxPlayers: 10\n  tags: [a, b]\n',
  'application-prod.yml': 'quiz:\n  maxPlayers: 500\n',
  'quiz.yml': 'quiz:\n  title: Live quiz\ndb:\n  password: "secret:s3cret-value-123"\n',
  'quiz-prod.yml': 'quiz:\n  title: Live quiz (prod)\n',
}

describe('the dashboard config routes', () => {
  let db: TestDatabase
  let a: Cluster
  let config: Config
  let server: Server
  let base: string
  const access = new Access(PASSWORD)
  const basic = { authorization: `Basic ${Buffer.from(`admin:${PASSWORD}`).toString('base64')}` }

  beforeAll(async () => {
    db = await testDatabase()
    a = await member(db.url, 'a')
    config = new Config(a.deps, { app: 'quiz', schema: z.object({ quiz: z.object({ maxPlayers: z.number().int().positive() }).loose() }).loose() })
    await config.start().catch(async () => {
      // No version yet: the schema refuses the empty configuration; push with a plain instance first.
      const plain = new Config(a.deps, {})
      await plain.start()
      await plain.push(files)
      await plain.close()
      await config.start()
    })
    const handler = configRoutes({ sql: a.db.sql, schema: a.db.schema, log: a.log, guard: accessGuard(access, new Throttle()), bus: a.bus, secret })
    // Mounted as the dashboard server would: one call, and a 404 for what it does not handle.
    server = createServer((req, res) => void handler(req, res).then((handled) => handled || void res.writeHead(404).end()))
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    base = `http://127.0.0.1:${(server.address() as { port: number }).port}`
  })
  afterAll(async () => {
    server?.close()
    await config?.close()
    await a?.close()
    await db?.drop()
  })

  it('serves Spring Cloud Config clients, profiles by precedence, behind the dashboard credentials', async () => {
    const prod = await springClient.load({ endpoint: `${base}/config`, name: 'quiz', profiles: ['prod'], auth: { user: 'admin', pass: PASSWORD } })
    expect(prod.get('quiz.maxPlayers')).toBe(500)
    expect(prod.get('quiz.title')).toBe('Live quiz (prod)')
    expect(prod.get('quiz.tags[1]')).toBe('b')
    // Given the cluster secret, the endpoint hands secrets to the config client in clear.
    expect(prod.get('db.password')).toBe('s3cret-value-123')
    const plain = await springClient.load({ endpoint: `${base}/config`, name: 'quiz', auth: { user: 'admin', pass: PASSWORD } })
    expect(plain.get('quiz.maxPlayers')).toBe(10)
    expect(plain.get('quiz.title')).toBe('Live quiz')
    await expect(springClient.load({ endpoint: `${base}/config`, name: 'quiz' })).rejects.toThrow()
    const res = await fetch(`${base}/config/quiz/prod`)
    expect(res.status).toBe(401)
    expect(res.headers.get('www-authenticate')).toMatch(/^Basic/)
    const env = (await (await fetch(`${base}/config/quiz/prod/main`, { headers: basic })).json()) as { name: string; profiles: string[]; label: string; propertySources: { name: string }[] }
    expect(env).toMatchObject({ name: 'quiz', profiles: ['prod'], label: 'main' })
    expect(env.propertySources.map((p) => p.name)).toEqual(['chorus:quiz-prod', 'chorus:quiz', 'chorus:application-prod', 'chorus:application'])
  })

  it('shows the panel: values with their sources (secrets masked), and the version each instance runs', async () => {
    const body = (await (await fetch(`${base}/api/config?app=quiz&profile=prod`, { headers: basic })).json()) as {
      version: number
      entries: { key: string; value: unknown; source: string }[]
      instances: { instanceId: string; version: number; current: boolean }[]
    }
    expect(body.entries.find((e) => e.key === 'quiz.maxPlayers')).toMatchObject({ value: 500, source: 'application-prod' })
    expect(body.entries.find((e) => e.key === 'db.password')).toMatchObject({ value: '••••••', source: 'quiz' })
    expect(JSON.stringify(body)).not.toContain('s3cret-value-123')
    expect(body.instances).toEqual([expect.objectContaining({ instanceId: 'a', version: body.version, current: true })])
  })

  it('rolls back only on a protected POST: a session needs its CSRF token, a bearer token does not', async () => {
    const v1 = config.version
    await config.set('quiz.maxPlayers', 77)
    const v2 = config.version
    const { session, cookie } = await access.issueSession(false)
    const sessionCookie = cookie.split(';')[0]!
    const post = (headers: Record<string, string>) =>
      fetch(`${base}/api/config/rollback`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ version: v1, expectedVersion: v2 }) })
    const noCsrf = await post({ cookie: sessionCookie, origin: base })
    expect(noCsrf.status).toBe(403)
    expect(((await noCsrf.json()) as { error: { code: string } }).error.code).toBe('CHORUS_ERR_DASHBOARD_CROSS_SITE')
    const crossSite = await post({ cookie: sessionCookie, origin: 'http://evil.example', 'x-csrf-token': access.csrfToken(session) })
    expect(crossSite.status).toBe(403)
    expect((await post({ ...basic })).status).toBe(401) // Basic reads, but does not act
    expect(config.version).toBe(v2)
    const ok = await post({ cookie: sessionCookie, origin: base, 'x-csrf-token': access.csrfToken(session) })
    expect(ok.status).toBe(200)
    expect(await ok.json()).toMatchObject({ version: v2 + 1, stored: true, changed: ['quiz.maxPlayers'] })
    await eventually(() => config.version === v2 + 1, 'the instance runs the rollback')
    expect(config.get('quiz.maxPlayers')).toBe(10)
    // The compare-and-set holds here too: the same request again finds another version.
    const stale = await post({ cookie: sessionCookie, origin: base, 'x-csrf-token': access.csrfToken(session) })
    expect(stale.status).toBe(409)
    // A bearer token passes without origin or CSRF token, and meets the same compare-and-set.
    const { token } = await access.issueToken({ name: 'ci' })
    const bearer = await post({ authorization: `Bearer ${token}` })
    expect(bearer.status).toBe(409)
    expect(((await bearer.json()) as { error: { code: string } }).error.code).toBe('CHORUS_ERR_CONFIG_CONFLICT')
    const history = (await (await fetch(`${base}/api/config/history?limit=2`, { headers: basic })).json()) as { versions: { version: number; author: string; differences: unknown[] }[] }
    expect(history.versions[0]).toMatchObject({ version: v2 + 1, author: 'dashboard:session', differences: [{ source: 'runtime', key: 'quiz.maxPlayers', before: 77 }] })
  })

  it('sets one key from the panel on a protected POST, refused when a registered schema refuses it', async () => {
    const { session, cookie } = await access.issueSession(false)
    const post = (body: unknown, headers: Record<string, string>) =>
      fetch(`${base}/api/config/set`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
    const asSession = { cookie: cookie.split(';')[0]!, origin: base, 'x-csrf-token': access.csrfToken(session) }
    const before = config.version
    const noCsrf = await post({ key: 'quiz.maxPlayers', value: 42 }, { cookie: asSession.cookie, origin: base })
    expect(noCsrf.status).toBe(403)
    expect((await post({ key: 'quiz.maxPlayers', value: 42 }, basic)).status).toBe(401)
    // quiz.maxPlayers must be a positive integer for the app 'quiz': nothing is stored.
    const refused = await post({ key: 'quiz.maxPlayers', value: -1 }, asSession)
    expect(refused.status).toBe(400)
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('CHORUS_ERR_CONFIG_INVALID')
    expect((await post({ value: 1 }, asSession)).status).toBe(400)
    expect(config.version).toBe(before)
    const ok = await post({ key: 'quiz.maxPlayers', value: 42, expectedVersion: before }, asSession)
    expect(ok.status).toBe(200)
    expect(await ok.json()).toMatchObject({ version: before + 1, stored: true, changed: ['quiz.maxPlayers'] })
    await eventually(() => config.version === before + 1, 'the instance runs the set')
    expect(config.get('quiz.maxPlayers')).toBe(42)
    const history = (await (await fetch(`${base}/api/config/history?limit=1`, { headers: basic })).json()) as { versions: { author: string; source: string }[] }
    expect(history.versions[0]).toMatchObject({ author: 'dashboard:session', source: 'set' })
  })
})
