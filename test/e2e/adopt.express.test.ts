// The adopted example (examples/adopt/after) as three real instances on one database: what the
// single-instance app did with a variable, a Map, setInterval, memory sessions and a local
// directory now holds for the whole cluster.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { eventually } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { freeBase } from '../helpers/ports.js'
import { Proc } from '../helpers/proc.js'
import { Browser } from '../helpers/session-app.js'

const app = new URL('../../examples/adopt/after/server.mjs', import.meta.url).pathname

describe('the adopted Express app on three instances', () => {
  let db: TestDatabase
  let dir: string
  let pricesFile: string
  let procs: Proc[] = []
  let ports: number[] = []
  const url = (i: number, path: string) => `http://127.0.0.1:${ports[i]}${path}`
  const json = async (i: number, path: string, init: RequestInit = {}) => (await (await fetch(url(i, path), init)).json()) as Record<string, unknown>
  const price = async (i: number, item: string) => (await json(i, `/prices/${item}`)).price

  beforeAll(async () => {
    db = await testDatabase()
    dir = await mkdtemp(join(tmpdir(), 'chorus-adopt-'))
    pricesFile = join(dir, 'prices.json')
    await writeFile(pricesFile, JSON.stringify({ tea: 3, cake: 5 }))
    const base = await freeBase(3)
    const env = { DATABASE_URL: db.url, CHORUS_SECRET: 'adopt-test-secret-0123456789', CHORUS_PRESET: 'local', CHORUS_FILES_ROOT: join(dir, 'files'), PRICES_FILE: pricesFile }
    procs = [1, 2, 3].map((i) => new Proc(app, [], { ...env, PORT: String(base + i), CHORUS_INSTANCE_ID: `adopt-${i}` }))
    ports = (await Promise.all(procs.map((p) => p.waitFor((l) => l.type === 'ready', 60_000, 'the app')))).map((l) => l.port as number)
  }, 120_000)
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()))
    await db?.drop()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  it('reads on one instance the session written through another', async () => {
    const browser = new Browser()
    expect((await browser.request(ports[0]!, 'POST', '/login?user=ann')).body).toEqual({ ok: true })
    expect((await browser.request(ports[1]!, 'GET', '/me')).body).toEqual({ user: 'ann' })
    expect((await browser.request(ports[2]!, 'GET', '/me')).body).toEqual({ user: 'ann' })
  })

  it('counts exactly under concurrent increments on every instance', async () => {
    const answers = await Promise.all(Array.from({ length: 90 }, (_, n) => json(n % 3, '/hits', { method: 'POST' })))
    const seen = answers.map((a) => a.hits as number).sort((x, y) => x - y)
    expect(seen).toEqual(Array.from({ length: 90 }, (_, n) => n + 1))
  })

  it('runs the report once per tick for the whole cluster', async () => {
    const reports = () => procs.flatMap((p) => p.lines.filter((l) => l.type === 'report').map((l) => l.tick as string))
    await eventually(() => new Set(reports()).size >= 4, 'four report ticks', 20_000, 100)
    const ticks = reports()
    expect(ticks.length).toBe(new Set(ticks).size)
    expect(procs.filter((p) => p.lines.some((l) => l.type === 'report')).length).toBeGreaterThanOrEqual(1)
  })

  it('keeps a cached price on every instance until a write invalidates it everywhere', async () => {
    for (const i of [0, 1, 2]) expect(await price(i, 'tea')).toBe(3)
    // Changed behind the app's back: every instance still serves its cached copy.
    await writeFile(pricesFile, JSON.stringify({ tea: 99, cake: 5 }))
    for (const i of [0, 1, 2]) expect(await price(i, 'tea')).toBe(3)
    expect(await json(0, '/prices/tea', { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ price: 4 }) })).toEqual({ ok: true })
    expect(JSON.parse(await readFile(pricesFile, 'utf8'))).toEqual({ tea: 4, cake: 5 })
    for (const i of [1, 2]) await eventually(async () => (await price(i, 'tea')) === 4, `instance ${i + 1} to drop its copy`, 10_000, 50)
    expect(await price(0, 'tea')).toBe(4)
  })

  it('serves through one instance a file uploaded through another', async () => {
    const body = 'an upload, made on instance 1\n'
    expect(await json(0, '/uploads/notes.txt', { method: 'PUT', headers: { 'content-type': 'text/plain' }, body })).toEqual({ ok: true })
    for (const i of [1, 2]) {
      const res = await fetch(url(i, '/uploads/notes.txt'))
      expect(res.status).toBe(200)
      expect(res.headers.get('content-type')).toBe('text/plain; charset=utf-8')
      expect(await res.text()).toBe(body)
    }
  })

  it('answers health and metrics from the one useCluster call, and leaves cleanly on SIGTERM', async () => {
    const ready = await fetch(url(1, '/health/ready'))
    expect(ready.status).toBe(200)
    expect(await (await fetch(url(2, '/metrics'))).text()).toContain('chorus_')
    const last = procs.pop()!
    last.kill('SIGTERM')
    expect(await last.exited).toEqual({ code: 0, signal: null })
  })
})
