import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { configRoutes, accessGuard } from '../../src/dashboard/config-routes.js'
import { Access } from '../../src/dashboard/auth.js'
import { Throttle } from '../../src/dashboard/throttle.js'
import { openSql, type Sql } from '../../src/db/connect.js'
import { createLogger } from '../../src/log.js'
import { spawn } from 'node:child_process'
import { bin, chorus, env as cliEnvOf } from '../helpers/cli.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { Proc, type Line } from '../helpers/proc.js'

const fixture = new URL('../fixtures/config-node.mjs', import.meta.url).pathname
const SECRET = 'config-e2e-cluster-secret-0123'
const PASSWORD = 'dashboard-password-e2e'

function readyOf(p: Proc): Promise<Line> {
  return Promise.race([
    p.waitFor((l) => l.type === 'ready' || l.type === 'start-failed', 30_000, 'ready'),
    p.exited.then(() => {
      throw new Error(`exited before ready:\n${p.stderr.slice(-15).join('\n')}`)
    }),
  ])
}

let tags = 0
async function ask(p: Proc, cmd: Record<string, unknown>): Promise<Line> {
  const tag = `t${++tags}`
  p.send({ ...cmd, tag })
  return p.waitFor((l) => (l.type === 'done' || l.type === 'failed') && l.tag === tag, 30_000, `answer to ${String(cmd.cmd)}`)
}

const changedTo = (p: Proc, version: number) => p.waitFor((l) => l.type === 'config:changed' && l.version === version, 15_000, `config:changed ${version} on ${p.child.pid}`)

describe('shared configuration across three processes', () => {
  let db: TestDatabase
  let a: Proc
  let b: Proc
  let c: Proc
  let dir: string
  const logs = new Map<Proc, string[]>()

  beforeAll(async () => {
    db = await testDatabase()
    dir = await mkdtemp(join(tmpdir(), 'chorus-config-'))
    const env = { DATABASE_URL: db.url, CHORUS_SECRET: SECRET, CHORUS_PRESET: 'local', CHORUS_LOG_LEVEL: 'info' }
    a = new Proc(fixture, [], { ...env, CHORUS_INSTANCE_ID: 'a' })
    b = new Proc(fixture, [], { ...env, CHORUS_INSTANCE_ID: 'b', FIXTURE_PROFILES: 'prod' })
    c = new Proc(fixture, [], { ...env, CHORUS_INSTANCE_ID: 'c' })
    for (const p of [a, b, c]) {
      // Every log line, not only the tail Proc keeps.
      const all: string[] = []
      logs.set(p, all)
      p.child.stderr!.on('data', (d: Buffer) => void all.push(d.toString('utf8')))
      const ready = await readyOf(p)
      expect(ready.type, JSON.stringify(ready)).toBe('ready')
    }
  })

  afterAll(async () => {
    await Promise.all([a, b, c].filter(Boolean).map((p) => p.stop()))
    await db?.drop()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  it('a set on one instance is run by all three within a bounded wait (time printed)', async () => {
    const started = Date.now()
    const done = await ask(a, { cmd: 'set', key: 'quiz.maxPlayers', value: 20 })
    expect(done).toMatchObject({ type: 'done', version: 1 })
    const seen = await Promise.all([a, b, c].map((p) => changedTo(p, 1)))
    const times = seen.map((l) => (l.at as number) - started)
    console.log(`config set → running on all 3 instances: ${Math.max(...times)} ms (each: ${times.join(', ')} ms)`)
    for (const l of seen) expect(l).toMatchObject({ version: 1, changed: ['quiz.maxPlayers'], maxPlayers: 20 })
  })

  it('catches up a version missed while its LISTEN connection was terminated', async () => {
    const [listener] = await db.sql<{ pid: number }[]>`
      select pid from pg_stat_activity where datname = current_database() and application_name = 'chorus:listen:c'`
    expect(listener).toBeDefined()
    // c cannot reconnect while stopped, so the NOTIFY of the next version is lost for it.
    c.child.kill('SIGSTOP')
    try {
      await db.sql`select pg_terminate_backend(${listener!.pid})`
      expect(await ask(a, { cmd: 'set', key: 'quiz.maxPlayers', value: 30 })).toMatchObject({ type: 'done', version: 2 })
      await changedTo(b, 2)
    } finally {
      c.child.kill('SIGCONT')
    }
    const caught = await changedTo(c, 2)
    expect(caught).toMatchObject({ version: 2, maxPlayers: 30 })
    const gap = c.lines.findIndex((l) => l.type === 'bus:gap')
    console.log(`c ran version 2 ${(caught.at as number) - (c.lines[gap]?.at as number)} ms after its bus:gap (${String(c.lines[gap]?.reason)})`)
  })

  it('an invalid push, from an instance or the CLI, changes nothing on any instance', async () => {
    const [{ n: before }] = (await db.sql<{ n: number }[]>`select count(*)::int as n from config_versions`) as [{ n: number }]
    const refused = await ask(b, { cmd: 'push', files: { 'application.yml': 'quiz:\n  title: 5\n' } })
    expect(refused).toMatchObject({ type: 'failed', code: 'CHORUS_ERR_CONFIG_INVALID', details: { key: 'quiz.title' } })
    await writeFile(join(dir, 'application.yml'), 'quiz:\n  title: 5\n')
    const cli = await chorus(['config', 'push', dir], dir, { DATABASE_URL: db.url, CHORUS_SECRET: SECRET })
    expect(cli.code).toBe(1)
    expect(cli.stderr).toContain('CHORUS_ERR_CONFIG_INVALID')
    expect(cli.stderr).toContain('quiz.title')
    const [{ n: after }] = (await db.sql<{ n: number }[]>`select count(*)::int as n from config_versions`) as [{ n: number }]
    expect(after).toBe(before)
    for (const p of [a, b, c]) expect(await ask(p, { cmd: 'show' })).toMatchObject({ version: 2, maxPlayers: 30, title: 'Quiz' })
  })

  it('never shows a secret: not in `chorus config get --json`, the dashboard API, the logs or the metrics', async () => {
    const clear = 'hunter2-correct-horse-battery'
    const texts: [string, string][] = []
    const set = await ask(a, { cmd: 'set', key: 'db.password', value: clear })
    expect(set.type).toBe('done')
    const version = set.version as number
    await Promise.all([b, c].map((p) => changedTo(p, version)))
    for (const p of [a, b, c]) expect(await ask(p, { cmd: 'holds', key: 'db.password', value: clear })).toMatchObject({ holds: true })
    // A secret set from the CLI, its value on stdin: the instances decrypt it with the same cluster secret.
    const token = 'tok-7f3a9c-secret-from-cli'
    const cliSet = await withStdin(['config', 'set', 'api.token', '-', '--secret', '--json'], dir, { DATABASE_URL: db.url, CHORUS_SECRET: SECRET }, token + '\n')
    expect(cliSet.code, cliSet.stderr).toBe(0)
    const tokenVersion = (JSON.parse(cliSet.stdout) as { version: number }).version
    await Promise.all([a, b, c].map((p) => changedTo(p, tokenVersion)))
    for (const p of [a, b, c]) expect(await ask(p, { cmd: 'holds', key: 'api.token', value: token })).toMatchObject({ holds: true })
    texts.push(['chorus config set (stdin)', cliSet.stdout + cliSet.stderr])

    const cliEnv = { DATABASE_URL: db.url, CHORUS_SECRET: SECRET }
    const get = await chorus(['config', 'get', '--json', '--app', 'quiz'], dir, cliEnv)
    expect(get.code).toBe(0)
    expect(JSON.parse(get.stdout).values['db.password']).toBe('••••••')
    texts.push(['chorus config get --json', get.stdout + get.stderr])
    for (const args of [['config', 'diff', '--json'], ['config', 'history', '--json'], ['config', 'get', 'db']]) {
      const r = await chorus(args, dir, cliEnv)
      expect(r.code).toBe(0)
      texts.push([`chorus ${args.join(' ')}`, r.stdout + r.stderr])
    }

    const { server, url, sql } = await dashboard(db.url)
    try {
      const auth = { authorization: `Basic ${Buffer.from(`admin:${PASSWORD}`).toString('base64')}` }
      for (const path of ['/api/config?app=quiz', '/api/config?app=quiz&profile=prod', '/api/config/history', '/config/quiz/default']) {
        const res = await fetch(url + path, { headers: auth })
        expect(res.status, path).toBe(200)
        texts.push([`dashboard ${path}`, await res.text()])
      }
    } finally {
      server.close()
      await sql.end({ timeout: 1 })
    }

    for (const p of [a, b, c]) {
      const display = await ask(p, { cmd: 'display' })
      expect((display.display as Record<string, unknown>)['db.password']).toBe('••••••')
      texts.push([`display of ${p.child.pid}`, JSON.stringify(display)])
      texts.push([`metrics of ${p.child.pid}`, (await ask(p, { cmd: 'metrics' })).metrics as string])
      texts.push([`output and logs of ${p.child.pid}`, JSON.stringify(p.lines) + logs.get(p)!.join('')])
    }
    // The logs did record the change (by key name), so the grep looked at real log lines.
    expect(logs.get(a)!.join('')).toMatch(/"changed":\["db.password"\].*"msg":"stored configuration version"/)
    for (const [where, text] of texts) {
      expect(text.includes(clear), where).toBe(false)
      expect(text.includes(token), where).toBe(false)
    }
  })
})

function withStdin(args: string[], cwd: string, extra: Record<string, string>, input: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { cwd, env: cliEnvOf(extra) })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    child.on('close', (code) => resolve({ code, stdout, stderr }))
    child.stdin.end(input)
  })
}

async function dashboard(databaseUrl: string): Promise<{ server: Server; url: string; sql: Sql }> {
  const sql = openSql(databaseUrl, { appName: 'chorus:test:dashboard', max: 2 })
  const handler = configRoutes({ sql, schema: 'chorus', log: createLogger('silent', {}), guard: accessGuard(new Access(PASSWORD), new Throttle()) })
  const server = createServer((req, res) => {
    void handler(req, res).then((handled) => {
      if (!handled) res.writeHead(404).end()
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const addr = server.address() as { port: number }
  return { server, url: `http://127.0.0.1:${addr.port}`, sql }
}
