import type { IncomingMessage } from 'node:http'
import { describe, expect, it } from 'vitest'
import { Access, sameOrigin } from '../../src/dashboard/auth.js'
import { MemoryCredentials } from '../../src/dashboard/credentials.js'
import { applicationsJson, applicationsXml, escapeXml } from '../../src/dashboard/eureka/format.js'
import { parseRegistration } from '../../src/dashboard/eureka/instance.js'
import { Throttle } from '../../src/dashboard/throttle.js'

const req = (headers: Record<string, string>) => ({ headers }) as unknown as IncomingMessage

describe('dashboard access', () => {
  const access = new Access('correct horse battery')

  it('refuses a missing or short password with typed errors', () => {
    expect(() => new Access('')).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_DASHBOARD_PASSWORD_MISSING' }))
    expect(() => new Access('short')).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_DASHBOARD_PASSWORD_WEAK' }))
  })

  it('admits a signed session cookie and refuses a tampered, foreign or expired one', async () => {
    const { cookie, session } = await access.issueSession(false)
    expect(cookie).toMatch(/^chorus_dashboard=\d+\.[\w-]+\.[\w-]+; Path=\/; HttpOnly; SameSite=Strict; Max-Age=\d+$/)
    const value = cookie.split(';')[0]!
    expect(await access.authenticate(req({ cookie: value }), { session: true })).toMatchObject({ via: 'session', session: { id: session.id } })
    const [exp, id, mac] = value.split('=')[1]!.split('.')
    for (const bad of [`${Number(exp) + 1}.${id}.${mac}`, `${exp}.${id}x.${mac}`, `${exp}.${id}.${mac!.slice(1)}`, `${exp}.${id}`]) {
      expect(await access.authenticate(req({ cookie: `chorus_dashboard=${bad}` }), { session: true })).toMatchObject({ bad: false })
    }
    const other = new Access('another password here')
    expect(await other.authenticate(req({ cookie: value }), { session: true })).toMatchObject({ bad: false })
    const expired = (await new Access('correct horse battery', { sessionTtlMs: -1000 }).issueSession(false)).cookie.split(';')[0]!
    expect(await access.authenticate(req({ cookie: expired }), { session: true })).toMatchObject({ bad: false })
  })

  it('ends a session on the server: after sign-out the same cookie admits no one', async () => {
    const { cookie } = await access.issueSession(false)
    const value = cookie.split(';')[0]!
    expect(await access.authenticate(req({ cookie: value }), { session: true })).toMatchObject({ via: 'session' })
    expect(await access.endSession(req({ cookie: value }))).toEqual(expect.any(String))
    expect(await access.authenticate(req({ cookie: value }), { session: true })).toEqual({ bad: false, why: 'the session has ended (signed out)' })
    // The same password in a new process with the same store: still ended.
    const store = new MemoryCredentials()
    const before = new Access('correct horse battery', { store })
    const kept = (await before.issueSession(false)).cookie.split(';')[0]!
    const ended = (await before.issueSession(false)).cookie.split(';')[0]!
    await before.endSession(req({ cookie: ended }))
    const after = new Access('correct horse battery', { store })
    expect(await after.authenticate(req({ cookie: kept }), { session: true })).toMatchObject({ via: 'session' })
    expect(await after.authenticate(req({ cookie: ended }), { session: true })).toMatchObject({ bad: false })
  })

  it('keeps at most maxSessions: signing in beyond ends the oldest', async () => {
    const small = new Access('correct horse battery', { maxSessions: 2 })
    const cookies: string[] = []
    for (let i = 0; i < 3; i++) cookies.push((await small.issueSession(false)).cookie.split(';')[0]!)
    const admitted = await Promise.all(cookies.map(async (c) => 'via' in (await small.authenticate(req({ cookie: c }), { session: true }))))
    expect(admitted.filter(Boolean)).toHaveLength(2)
    expect(admitted[2]).toBe(true)
  })

  it('ties the CSRF token to the session', async () => {
    const a = (await access.issueSession(false)).session
    const b = (await access.issueSession(false)).session
    expect(access.checkCsrf(a, access.csrfToken(a))).toBe(true)
    expect(access.checkCsrf(a, access.csrfToken(b))).toBe(false)
    expect(access.checkCsrf(a, undefined)).toBe(false)
  })

  it('takes the bearer token and Basic password only where asked, and reports wrong ones as failures', async () => {
    const basic = (pw: string) => `Basic ${Buffer.from(`admin:${pw}`).toString('base64')}`
    const { token, record } = await access.startupToken()
    expect(token).toMatch(/^chd_[0-9a-f]{16}_[\w-]{43}$/)
    expect((await access.startupToken()).token).toBe(token) // reused, not piled up
    expect(await access.authenticate(req({ authorization: `Bearer ${token}` }), { bearer: true })).toEqual({ via: 'bearer', token: record })
    expect(await access.authenticate(req({ authorization: 'Bearer chd_nope' }), { bearer: true })).toEqual({ bad: true })
    expect(await access.authenticate(req({ authorization: `Bearer ${token.slice(0, -2)}xx` }), { bearer: true })).toEqual({ bad: true })
    expect(await access.authenticate(req({ authorization: basic('correct horse battery') }), { basic: true })).toEqual({ via: 'basic', user: 'admin' })
    expect(await access.authenticate(req({ authorization: basic('wrong') }), { basic: true })).toEqual({ bad: true })
    // Basic replayed by a browser on a route that takes no Basic is ignored, not failed.
    expect(await access.authenticate(req({ authorization: basic('correct horse battery') }), { session: true })).toEqual({ bad: false })
  })

  it('lists, expires and revokes API tokens; a revoked or expired token is refused without counting as a guess', async () => {
    const a = new Access('correct horse battery', { maxTokens: 2 })
    const one = await a.issueToken({ name: 'prometheus' })
    const two = await a.issueToken({ name: 'short', ttlMs: 1000 })
    expect((await a.tokens()).map((t) => t.name).sort()).toEqual(['prometheus', 'short'])
    await expect(a.issueToken()).rejects.toMatchObject({ code: 'CHORUS_ERR_DASHBOARD_TOKEN_LIMIT' })
    for (const bad of [{ ttlMs: 0 }, { ttlMs: 400 * 24 * 3600_000 }, { name: '' }, { name: 'a\nb' }]) {
      await expect(a.issueToken(bad)).rejects.toMatchObject({ code: 'CHORUS_ERR_DASHBOARD_BAD_REQUEST' })
    }
    const bearer = (t: string) => req({ authorization: `Bearer ${t}` })
    expect(await a.authenticate(bearer(one.token), { bearer: true })).toMatchObject({ via: 'bearer', token: { name: 'prometheus' } })
    expect(await a.revokeToken(one.record.id)).toBe(true)
    expect(await a.revokeToken(one.record.id)).toBe(false)
    expect(await a.authenticate(bearer(one.token), { bearer: true })).toEqual({ bad: false, why: 'the token has expired or was revoked' })
    await new Promise((r) => setTimeout(r, 1100))
    expect(await a.authenticate(bearer(two.token), { bearer: true })).toEqual({ bad: false, why: 'the token has expired or was revoked' })
    expect(await a.tokens()).toEqual([])
    // Another password's key signs other tokens.
    expect(await new Access('another password here').authenticate(bearer(one.token), { bearer: true })).toEqual({ bad: true })
  })

  it('accepts only requests whose Origin (or Referer) is the dashboard itself', () => {
    expect(sameOrigin(req({ host: 'h:8761', origin: 'http://h:8761' }), false)).toEqual({ ok: true })
    expect(sameOrigin(req({ host: 'h:8761', referer: 'http://h:8761/page' }), false)).toEqual({ ok: true })
    expect(sameOrigin(req({ host: 'h:8761', origin: 'http://evil:8761' }), true).ok).toBe(false)
    expect(sameOrigin(req({ host: 'h:8761', origin: 'null' }), true).ok).toBe(false)
    expect(sameOrigin(req({ host: 'h:8761' }), false).ok).toBe(false)
    expect(sameOrigin(req({ host: 'h:8761' }), true).ok).toBe(true)
  })

  it('throttles after the free failures with a doubling delay, and forgets on success', () => {
    const t = new Throttle({ freeFailures: 3, baseDelayMs: 10_000 })
    for (let i = 0; i < 2; i++) t.failure('1.2.3.4')
    expect(t.retryAfterSec('1.2.3.4')).toBe(0)
    t.failure('1.2.3.4')
    expect(t.retryAfterSec('1.2.3.4')).toBe(10)
    t.failure('1.2.3.4')
    expect(t.retryAfterSec('1.2.3.4')).toBe(20)
    expect(t.retryAfterSec('5.6.7.8')).toBe(0)
    t.success('1.2.3.4')
    expect(t.retryAfterSec('1.2.3.4')).toBe(0)
  })
})

describe('Eureka formats', () => {
  const stored = parseRegistration('ORDERS', {
    instance: { app: 'orders', hostName: 'h<1>', port: { $: 8080, '@enabled': 'true' }, metadata: { 'a&b': 'x"y', ok: '<v>' }, leaseInfo: { durationInSecs: 5 } },
  })
  const apps = [{ name: 'ORDERS', instances: [{ stored, registeredAt: new Date(1000), lastRenewalAt: new Date(2000), lastUpdatedAt: new Date(2000) }] }]

  it('validates registrations with typed errors', () => {
    expect(stored).toMatchObject({ instanceId: 'h<1>', port: 8080, portEnabled: true, durationInSecs: 5, status: 'UP' })
    for (const body of [{}, { instance: {} }, { instance: { hostName: 'h', leaseInfo: { durationInSecs: 0 } } }, { instance: { hostName: 'h', status: 'WEIRD' } }]) {
      expect(() => parseRegistration('X', body)).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_DASHBOARD_BAD_REQUEST' }))
    }
  })

  it('accepts only absolute http(s) URLs without credentials, and fields of sane length without control characters', () => {
    const ok = parseRegistration('X', { instance: { hostName: 'h', homePageUrl: 'http://h:8080/', statusPageUrl: 'https://h/info', healthCheckUrl: 'HTTP://h/health' } })
    expect(ok).toMatchObject({ homePageUrl: 'http://h:8080/', statusPageUrl: 'https://h/info' })
    const refused = (instance: Record<string, unknown>) => {
      try {
        parseRegistration('X', { instance: { hostName: 'h', ...instance } })
      } catch (err) {
        return (err as Error).message
      }
      return 'accepted'
    }
    for (const url of ['javascript:alert(1)', 'JavaScript:alert(1)', ' javascript:alert(1)', 'data:text/html,<script>1</script>', '//evil.example/', '/relative', 'http://user:pw@h/', 'ftp://h/', 'http://h/\n']) {
      for (const field of ['homePageUrl', 'statusPageUrl', 'healthCheckUrl', 'secureHealthCheckUrl']) {
        expect(refused({ [field]: url }), `${field} ${JSON.stringify(url)}`).toMatch(new RegExp(`instance\\.${field} must be an absolute http:// or https:// URL|instance\\.${field} must be at most`))
      }
    }
    expect(refused({ homePageUrl: `http://h/${'a'.repeat(1000)}` })).toMatch(/instance\.homePageUrl must be at most 1000 characters/)
    expect(refused({ hostName: 'h'.repeat(256) })).toMatch(/instance\.hostName must be at most 255 characters/)
    expect(refused({ instanceId: 'i'.repeat(201) })).toMatch(/instance\.instanceId must be at most 200 characters/)
    expect(refused({ hostName: 'h\r\nX-Injected: 1' })).toMatch(/without control characters/)
    expect(refused({ metadata: { ['k'.repeat(201)]: 'v' } })).toMatch(/metadata keys/)
    expect(refused({ lastDirtyTimestamp: 'soon' })).toMatch(/lastDirtyTimestamp/)
  })

  it('escapes XML and leaves out metadata keys that cannot be element names', () => {
    expect(escapeXml(`<a href="x">&'`)).toBe('&lt;a href=&quot;x&quot;&gt;&amp;&apos;')
    const xml = applicationsXml(apps)
    expect(xml).toContain('<hostName>h&lt;1&gt;</hostName>')
    expect(xml).toContain('<metadata><ok>&lt;v&gt;</ok></metadata>')
    expect(xml).not.toContain('a&b')
    expect(xml).toContain('<apps__hashcode>UP_1_</apps__hashcode>')
  })

  it('renders JSON in the Eureka v2 shape', () => {
    const json = applicationsJson(apps) as { applications: { apps__hashcode: string; application: { name: string; instance: Record<string, unknown>[] }[] } }
    expect(json.applications.apps__hashcode).toBe('UP_1_')
    expect(json.applications.application[0]!.instance[0]).toMatchObject({ app: 'ORDERS', port: { $: 8080, '@enabled': 'true' }, leaseInfo: { durationInSecs: 5, lastRenewalTimestamp: 2000 } })
  })
})
