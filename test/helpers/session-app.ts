// The session scenarios every supported framework must pass, run against a fixture app started as
// two real processes of one cluster, with a cookie-keeping HTTP client per simulated browser.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testDatabase, type TestDatabase } from './db.js'
import { Proc } from './proc.js'

/** One browser: keeps the session cookie between requests, whichever instance answers. */
export class Browser {
  cookie = ''

  async request(port: number, method: 'GET' | 'POST', path: string): Promise<{ status: number; body: Record<string, unknown> }> {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, { method, headers: this.cookie ? { cookie: this.cookie } : {} })
    for (const c of res.headers.getSetCookie()) this.cookie = c.split(';')[0]!
    return { status: res.status, body: (await res.json()) as Record<string, unknown> }
  }
}

export function describeSessionApp(framework: string, fixture: string, store: string): void {
  describe(`sessions with ${framework} on two instances`, () => {
    let db: TestDatabase
    let a: Proc
    let b: Proc
    let portA: number
    let portB: number

    beforeAll(async () => {
      db = await testDatabase()
      const env = { DATABASE_URL: db.url, CHORUS_SECRET: 'session-test-secret-0123456789', CHORUS_PRESET: 'local' }
      a = new Proc(fixture, [], { ...env, CHORUS_INSTANCE_ID: 'web-a' })
      b = new Proc(fixture, [], { ...env, CHORUS_INSTANCE_ID: 'web-b' })
      ;[portA, portB] = (await Promise.all([a, b].map((p) => p.waitFor((l) => l.type === 'ready', 30_000, 'the app')))).map((l) => l.port as number) as [number, number]
    })
    afterAll(async () => {
      await Promise.all([a?.stop(), b?.stop()])
      await db?.drop()
    })

    it('sees on one instance the login made on the other', async () => {
      const browser = new Browser()
      expect((await browser.request(portA, 'GET', '/me')).body.user).toBeNull()
      expect((await browser.request(portA, 'POST', '/login?user=ann')).body).toMatchObject({ ok: true, instance: 'web-a' })
      expect((await browser.request(portB, 'GET', '/me')).body).toMatchObject({ user: 'ann', instance: 'web-b' })
      expect((await browser.request(portA, 'GET', '/me')).body).toMatchObject({ user: 'ann', instance: 'web-a' })
    })

    it('ends the session everywhere on logout from either instance', async () => {
      for (const [loginAt, logoutAt] of [[portA, portB], [portB, portA]] as const) {
        const browser = new Browser()
        await browser.request(loginAt, 'POST', '/login?user=bob')
        expect((await browser.request(logoutAt, 'GET', '/me')).body.user).toBe('bob')
        expect((await browser.request(logoutAt, 'POST', '/logout')).body.ok).toBe(true)
        expect((await browser.request(loginAt, 'GET', '/me')).body.user).toBeNull()
        expect((await browser.request(logoutAt, 'GET', '/me')).body.user).toBeNull()
      }
      const [row] = await db.sql`select count(*)::int as n from sessions where store = ${store} and data like '%bob%'`
      expect(row!.n).toBe(0)
    })

    it('keeps both keys when the two instances write different keys of one session at the same time', async () => {
      const browser = new Browser()
      await browser.request(portA, 'POST', '/login?user=cy')
      // Both requests load the same version of the session and change it before either saves.
      const left = browser.request(portA, 'POST', '/put?key=left&value=L&hold=left')
      const right = browser.request(portB, 'POST', '/put?key=right&value=R&hold=right')
      await a.waitFor((l) => l.type === 'holding' && l.name === 'left', 10_000, 'the left request')
      await b.waitFor((l) => l.type === 'holding' && l.name === 'right', 10_000, 'the right request')
      a.send({ cmd: 'release', name: 'left' })
      b.send({ cmd: 'release', name: 'right' })
      expect((await left).status).toBe(200)
      expect((await right).status).toBe(200)
      for (const port of [portA, portB]) {
        expect((await browser.request(port, 'GET', '/me')).body.data).toEqual({ user: 'cy', left: 'L', right: 'R' })
      }
    })

    it('refuses a session over the size limit with a typed error and writes nothing', async () => {
      const browser = new Browser()
      await browser.request(portA, 'POST', '/login?user=dee')
      const big = await browser.request(portA, 'POST', '/put?key=big&size=70000')
      expect(big.status).toBeGreaterThanOrEqual(400)
      expect(JSON.stringify(big.body)).toContain('CHORUS_ERR_SESSION_TOO_LARGE')
      expect((await browser.request(portB, 'GET', '/me')).body.data).toEqual({ user: 'dee' })
    })
  })
}
