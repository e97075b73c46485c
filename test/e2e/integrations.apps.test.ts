// chorus/express and chorus/fastify, each on two real instances: one useCluster call gives shared
// sessions, RPC between the instances, health, metrics, the STOMP endpoint and a clean SIGTERM.
import WebSocket from 'ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { freeBase } from '../helpers/ports.js'
import { Proc } from '../helpers/proc.js'
import { Browser } from '../helpers/session-app.js'

const fixture = new URL('../fixtures/integrations-app.mjs', import.meta.url).pathname

describe.each(['express', 'fastify'])('useCluster from chorus/%s on two instances', (framework) => {
  let db: TestDatabase
  let procs: Proc[] = []
  let ports: number[] = []
  const url = (i: number, path: string) => `http://127.0.0.1:${ports[i]}${path}`

  beforeAll(async () => {
    db = await testDatabase()
    const base = await freeBase(2)
    const env = { DATABASE_URL: db.url, CHORUS_SECRET: 'integrations-secret-0123456789', CHORUS_PRESET: 'local', FRAMEWORK: framework }
    procs = [1, 2].map((i) => new Proc(fixture, [], { ...env, PORT: String(base + i), CHORUS_INSTANCE_ID: `${framework}-${i}` }))
    ports = (await Promise.all(procs.map((p) => p.waitFor((l) => l.type === 'ready', 60_000, 'the app')))).map((l) => l.port as number)
  }, 120_000)
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()))
    await db?.drop()
  })

  it('keeps the session across instances', async () => {
    const browser = new Browser()
    expect((await browser.request(ports[0]!, 'POST', '/login?user=kim')).body).toEqual({ ok: true })
    expect((await browser.request(ports[1]!, 'GET', '/me')).body).toEqual({ user: 'kim', instance: `${framework}-2` })
  })

  it('serves RPC from the peer', async () => {
    expect(await (await fetch(url(0, `/ask/${framework}-2`))).json()).toEqual({ answer: `${framework}-2` })
    expect(await (await fetch(url(1, `/ask/${framework}-1`))).json()).toEqual({ answer: `${framework}-1` })
  })

  it('answers health and metrics', async () => {
    const ready = await fetch(url(0, '/health/ready'))
    expect(ready.status).toBe(200)
    expect(await ready.json()).toMatchObject({ status: 'pass', instanceId: `${framework}-1` })
    expect((await fetch(url(1, '/health/live'))).status).toBe(200)
    const metrics = await fetch(url(1, '/metrics'))
    expect(metrics.headers.get('content-type')).toContain('text/plain')
    expect(await metrics.text()).toMatch(/chorus_http_requests_total\{[^}]*code="200"/)
  })

  it('accepts STOMP connections at /stomp', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${ports[0]}/stomp`, ['v12.stomp'])
    const frame = await new Promise<string>((resolve, reject) => {
      ws.once('open', () => ws.send('CONNECT\naccept-version:1.2\nhost:localhost\n\n\u0000'))
      ws.once('message', (data) => resolve(String(data)))
      ws.once('error', reject)
    })
    ws.close()
    expect(frame.startsWith('CONNECTED\n')).toBe(true)
  })

  it('leaves cleanly on SIGTERM', async () => {
    const last = procs.pop()!
    last.kill('SIGTERM')
    expect(await last.exited).toEqual({ code: 0, signal: null })
  })
})
