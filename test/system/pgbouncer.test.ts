// Chorus behind a real PgBouncer 1.18 in transaction mode: `chorus up` with the hello and quiz apps
// through the pooler (CHORUS_DIRECT_URL for session work), the quiz end to end through it, and the
// typed refusal when the pooled URL is all an instance is given.
import { spawn, type ChildProcess } from 'node:child_process'
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { startPgBouncer, type PgBouncer } from '../helpers/pgbouncer.js'
import { freeBase } from '../helpers/ports.js'
import { asUser, login } from '../helpers/quiz.js'
import { connectStomp } from '../helpers/stomp.js'

const root = new URL('../..', import.meta.url).pathname
const bin = join(root, 'bin/chorus.js')
const hello = join(root, 'examples/hello/server.mjs')
const quizApp = join(root, 'examples/quiz/server.mjs')
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

interface Up {
  readonly port: number
  readonly output: () => string
  readonly exited: Promise<number | null>
  readonly child: ChildProcess
  readonly closed: () => boolean
  stop(): Promise<number | null>
}

/** `chorus up` for `app` in a temporary directory on free ports, with the given database URLs. */
async function chorusUp(app: string, instances: number, urls: { database: string; direct?: string }): Promise<Up> {
  const dir = await mkdtemp(join(tmpdir(), 'chorus-pgbouncer-up-'))
  await chmod(dir, 0o755)
  const port = await freeBase(instances)
  const env: Record<string, string | undefined> = {
    ...process.env,
    NO_COLOR: '1',
    CHORUS_LOG_LEVEL: 'warn',
    CHORUS_SECRET: 'pgbouncer-system-secret-0123456789',
    DATABASE_URL: urls.database,
    CHORUS_DIRECT_URL: urls.direct,
  }
  if (!urls.direct) delete env.CHORUS_DIRECT_URL
  const args = [bin, 'up', '--instances', String(instances), '--app', app, '--port', String(port), '--no-dashboard']
  const child = spawn(process.execPath, args, { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()))
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()))
  // 'close': the process has exited and everything it printed has been read.
  let closed = false
  const exited = new Promise<number | null>((resolve) =>
    child.once('close', (code) => {
      closed = true
      resolve(code)
    }),
  )
  return {
    port,
    child,
    exited,
    output: () => out,
    closed: () => closed,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT')
      const force = setTimeout(() => child.kill('SIGKILL'), 30_000)
      const code = await exited
      clearTimeout(force)
      await rm(dir, { recursive: true, force: true })
      return code
    },
  }
}

async function getJson<T>(url: string, headers: Record<string, string> = {}): Promise<T | null> {
  try {
    const res = await fetch(url, { headers })
    return res.ok ? ((await res.json()) as T) : null
  } catch {
    return null
  }
}

/** Waits until every instance answers `path` with a body `ready` accepts. */
async function untilServing<T>(up: Up, instances: number, path: string, ready: (body: T) => boolean): Promise<T[]> {
  const deadline = Date.now() + 90_000
  for (;;) {
    const bodies = await Promise.all(Array.from({ length: instances }, (_, i) => getJson<T>(`http://127.0.0.1:${up.port + i + 1}${path}`)))
    if (bodies.every((b) => b !== null && ready(b))) return bodies as T[]
    if (Date.now() > deadline || up.closed() || /instance-\d+ exited/.test(up.output())) throw new Error(`the cluster did not start through the pooler:\n${up.output().slice(-4000)}`)
    await sleep(250)
  }
}

/**
 * Instances the balancer on `up.port` reaches by requests to `path` within `withinMs` (the balancer
 * adds an instance once its watcher sees it and its readiness probe passes, which on a busy
 * machine can take a few seconds after the instance itself answers).
 */
async function throughBalancer(up: Up, path: string, withinMs = 20_000): Promise<Set<string>> {
  const seen = new Set<string>()
  const deadline = Date.now() + withinMs
  while (seen.size < 3 && Date.now() < deadline) {
    const body = await getJson<{ instance: string }>(`http://127.0.0.1:${up.port}${path}`)
    if (body) seen.add(body.instance)
    await sleep(body ? 20 : 200)
  }
  return seen
}

/** A stack frame as Node prints it, alone on its line or after `chorus up`'s instance prefix. */
const STACK_FRAME = /(^|│)\s+at \S.*(:\d+:\d+\)?|\(native\)|\(<anonymous>\))$/m

describe('through PgBouncer in transaction mode', () => {
  let bouncer: PgBouncer
  const dbs: TestDatabase[] = []
  const ups: Up[] = []

  /** A new, empty database (Chorus migrates it through the direct URL), and its pooled and direct URLs. */
  async function database(): Promise<{ db: TestDatabase; pooled: string; direct: string }> {
    const db = await testDatabase({ empty: true })
    dbs.push(db)
    return { db, pooled: bouncer.url(db.name), direct: db.url }
  }

  beforeAll(async () => {
    bouncer = await startPgBouncer(inject('pgUrl'), { poolSize: 20, maxClients: 400 })
  })

  afterAll(async () => {
    await Promise.all(ups.map((u) => u.stop()))
    await bouncer?.close()
    for (const db of dbs) await db.drop()
  })

  it('runs the hello app with chorus up: three instances that list each other, all served through the balancer', async () => {
    const { db, pooled, direct } = await database()
    const up = await chorusUp(hello, 3, { database: pooled, direct })
    ups.push(up)
    type Hello = { instance: string; members: { id: string; status: string }[] }
    const views = await untilServing<Hello>(up, 3, '/', (b) => b.members.filter((m) => m.status === 'up').length === 3)
    expect(views.map((v) => v.instance)).toEqual(['instance-1', 'instance-2', 'instance-3'])
    for (const v of views) expect(v.members.map((m) => m.id).sort()).toEqual(['instance-1', 'instance-2', 'instance-3'])
    expect([...(await throughBalancer(up, '/'))].sort()).toEqual(['instance-1', 'instance-2', 'instance-3'])

    // Each instance is ready (its readiness includes the database, reached through the pooler),
    // and the pooled URL carried the cluster's work, not only the direct one.
    for (const i of [1, 2, 3]) expect((await fetch(`http://127.0.0.1:${up.port + i}/health/ready`)).status).toBe(200)
    expect((await bouncer.stats(db.name)).xacts).toBeGreaterThan(0)
    expect(up.output()).not.toMatch(STACK_FRAME)
    expect(await up.stop()).toBe(0)
    ups.splice(ups.indexOf(up), 1)
  })

  it('runs the quiz end to end through the pooler: start, answers, evaluation once, results', async () => {
    const { db, pooled, direct } = await database()
    const up = await chorusUp(quizApp, 3, { database: pooled, direct })
    ups.push(up)
    await untilServing<{ instance: string; members: { status: string }[] }>(up, 3, '/api/instance', (b) => b.members.filter((m) => m.status === 'up').length === 3)
    expect([...(await throughBalancer(up, '/api/instance'))].sort()).toEqual(['instance-1', 'instance-2', 'instance-3'])
    const base = `http://127.0.0.1:${up.port}`

    const teacher = await login(base, 'teacher', 'teacher')
    const alice = await login(`http://127.0.0.1:${up.port + 1}`, 'alice', 'alice')
    const bob = await login(`http://127.0.0.1:${up.port + 2}`, 'bob', 'bob')
    // Students on two different instances, over STOMP: the start and their results reach them there.
    const stomp = await Promise.all(
      [alice, bob].map((who, i) => connectStomp(`ws://127.0.0.1:${up.port + i + 1}/stomp`, { connectHeaders: { login: who.user, passcode: who.stompToken } })),
    )
    try {
      const course = stomp.map((s) => s.subscribe('/topic/course/1'))
      const results = stomp.map((s) => s.subscribe('/user/queue/results'))
      await sleep(300) // the SUBSCRIBEs reach the gateway before the start is published

      const put = await fetch(`${base}/api/quizzes/2`, { method: 'PUT', headers: asUser(teacher), body: JSON.stringify({ title: 'Capitals (pooled)', durationS: 5 }) })
      expect(put.status).toBe(200)
      const start = await fetch(`${base}/api/quizzes/2/start`, { method: 'POST', headers: asUser(teacher, false) })
      expect(start.status).toBe(200)
      const { run } = (await start.json()) as { run: number }

      // Answers through the balancer: alice right twice, bob right once.
      const answers: [typeof alice, string, number][] = [
        [alice, 'c1', 1],
        [alice, 'c2', 2],
        [bob, 'c1', 0],
        [bob, 'c2', 2],
      ]
      for (const [who, questionId, choice] of answers) {
        const res = await fetch(`${base}/api/quizzes/2/answers`, { method: 'POST', headers: asUser(who), body: JSON.stringify({ questionId, choice }) })
        expect(res.status, await res.clone().text()).toBe(200)
      }
      await expect.poll(() => course.map((c) => c.some((m) => JSON.parse(m.body).type === 'quiz-started')), { timeout: 10_000 }).toEqual([true, true])

      // The evaluation job runs at the due date; both results arrive where each student is connected.
      await expect.poll(() => results.map((r) => r.length), { timeout: 30_000, interval: 250 }).toEqual([1, 1])
      const delivered = results.map((r) => JSON.parse(r[0]!.body) as { quizId: number; run: number; score: number; total: number })
      expect(delivered).toEqual([
        expect.objectContaining({ quizId: 2, run, score: 2, total: 2 }),
        expect.objectContaining({ quizId: 2, run, score: 1, total: 2 }),
      ])
      const viaHttp = await getJson<{ score: number; total: number }>(`${base}/api/quizzes/2/result`, { cookie: alice.cookie })
      expect(viaHttp).toMatchObject({ score: 2, total: 2, run })

      // Evaluated exactly once, read on the database itself.
      const sql = postgres(db.url, { max: 1, onnotice: () => undefined })
      try {
        const evaluations = await sql`select run, students from quiz.evaluations where quiz_id = 2`
        expect(evaluations.map((e) => [e.run, e.students])).toEqual([[run, 2]])
        const stored = await sql`select student, score from quiz.results where quiz_id = 2 and run = ${run} order by student`
        expect(stored.map((r) => [r.student, r.score])).toEqual([
          ['alice', 2],
          ['bob', 1],
        ])
      } finally {
        await sql.end({ timeout: 1 })
      }
      expect((await bouncer.stats(db.name)).xacts).toBeGreaterThan(0)
    } finally {
      await Promise.all(stomp.map((s) => s.close()))
    }
    expect(up.output()).not.toMatch(STACK_FRAME)
    expect(await up.stop()).toBe(0)
    ups.splice(ups.indexOf(up), 1)
  })

  it('refuses chorus up given only the pooled URL, with the typed error that names CHORUS_DIRECT_URL', async () => {
    const { pooled } = await database()
    const up = await chorusUp(hello, 1, { database: pooled })
    ups.push(up)
    const deadline = Date.now() + 60_000
    while (!up.output().includes('CHORUS_ERR_DB_POOLER') && !up.closed() && Date.now() < deadline) await sleep(200)
    const out = up.output()
    expect(out, out.slice(-3000)).toContain('CHORUS_ERR_DB_POOLER')
    const line = out.split('\n').find((l) => l.includes('CHORUS_ERR_DB_POOLER'))!
    expect(line).toContain('CHORUS_DIRECT_URL')
    expect(out).not.toMatch(STACK_FRAME)
    // Nothing serves on the instance's port.
    expect(await getJson(`http://127.0.0.1:${up.port + 1}/`)).toBeNull()
    await up.stop()
    ups.splice(ups.indexOf(up), 1)
  })

  it('refuses to start an instance run on its own (as a process manager runs it) given only the pooled URL: the typed error, no stack trace', async () => {
    const { pooled } = await database()
    const port = await freeBase(0)
    const env: Record<string, string | undefined> = { ...process.env, DATABASE_URL: pooled, CHORUS_SECRET: 'pgbouncer-system-secret-0123456789', PORT: String(port), CHORUS_LOG_LEVEL: 'warn' }
    delete env.CHORUS_DIRECT_URL
    const child = spawn(process.execPath, [hello], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout!.on('data', (c: Buffer) => (out += c.toString()))
    child.stderr!.on('data', (c: Buffer) => (out += c.toString()))
    const force = setTimeout(() => child.kill('SIGKILL'), 60_000)
    const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)))
    clearTimeout(force)
    expect(code, out).not.toBe(0)
    expect(code, out).not.toBeNull()
    // One line says it all: the code and the fix.
    expect(out.split('\n').filter((l) => l.includes('CHORUS_ERR_DB_POOLER') && l.includes('CHORUS_DIRECT_URL')), out).toHaveLength(1)
    expect(out).not.toMatch(STACK_FRAME)
  })
})
