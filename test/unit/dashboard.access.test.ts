import type { IncomingMessage } from 'node:http'
import { describe, expect, it } from 'vitest'
import { Access, sameOrigin } from '../../src/dashboard/auth.js'
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

  it('admits a signed session cookie and refuses a tampered, foreign or expired one', () => {
    const { cookie, session } = access.issueSession(false)
    expect(cookie).toMatch(/^chorus_dashboard=\d+\.[\w-]+\.[\w-]+; Path=\/; HttpOnly; SameSite=Strict; Max-Age=\d+$/)
    const value = cookie.split(';')[0]!
    expect(access.authenticate(req({ cookie: value }), { session: true })).toMatchObject({ via: 'session', session: { id: session.id } })
    const [exp, id, mac] = value.split('=')[1]!.split('.')
    for (const bad of [`${Number(exp) + 1}.${id}.${mac}`, `${exp}.${id}x.${mac}`, `${exp}.${id}.${mac!.slice(1)}`, `${exp}.${id}`]) {
      expect(access.authenticate(req({ cookie: `chorus_dashboard=${bad}` }), { session: true })).toEqual({ bad: false })
    }
    const other = new Access('another password here')
    expect(other.authenticate(req({ cookie: value }), { session: true })).toEqual({ bad: false })
    const expired = new Access('correct horse battery', { sessionTtlMs: -1000 }).issueSession(false).cookie.split(';')[0]!
    expect(access.authenticate(req({ cookie: expired }), { session: true })).toEqual({ bad: false })
  })

  it('ties the CSRF token to the session', () => {
    const a = access.issueSession(false).session
    const b = access.issueSession(false).session
    expect(access.checkCsrf(a, access.csrfToken(a))).toBe(true)
    expect(access.checkCsrf(a, access.csrfToken(b))).toBe(false)
    expect(access.checkCsrf(a, undefined)).toBe(false)
  })

  it('takes the bearer token and Basic password only where asked, and reports wrong ones as failures', () => {
    const basic = (pw: string) => `Basic ${Buffer.from(`admin:${pw}`).toString('base64')}`
    expect(access.token).toMatch(/^chd_[\w-]{40}$/)
    expect(new Access('correct horse battery').token).toBe(access.token)
    expect(access.authenticate(req({ authorization: `Bearer ${access.token}` }), { bearer: true })).toEqual({ via: 'bearer' })
    expect(access.authenticate(req({ authorization: 'Bearer chd_nope' }), { bearer: true })).toEqual({ bad: true })
    expect(access.authenticate(req({ authorization: basic('correct horse battery') }), { basic: true })).toEqual({ via: 'basic', user: 'admin' })
    expect(access.authenticate(req({ authorization: basic('wrong') }), { basic: true })).toEqual({ bad: true })
    // Basic replayed by a browser on a route that takes no Basic is ignored, not failed.
    expect(access.authenticate(req({ authorization: basic('correct horse battery') }), { session: true })).toEqual({ bad: false })
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
