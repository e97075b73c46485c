// How `chorus` fails when its database cannot be reached: every command that uses PostgreSQL, run
// for real against a refused port, an unknown host, a wrong password and a string that is not a URL,
// prints one line with CHORUS_ERR_DB_CONNECT (no password, no stack unless --debug) and exits with 3;
// createCluster throws the same error. Also the exit codes of usage errors and unexpected errors.
import { execFile } from 'node:child_process'
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { serverUrl, testDatabase, type TestDatabase } from '../helpers/db.js'
import { chorus, env, root, type Run } from '../helpers/cli.js'
import { freeBase } from '../helpers/ports.js'

const app = join(root, 'examples/hello/server.mjs')
const EXPECTED_URL = 'not a PostgreSQL URL (expected postgres://user:password@host:port/database)'


/** Runs the jobs two at a time: the machine is shared. */
async function twoAtATime<T>(jobs: (() => Promise<T>)[]): Promise<T[]> {
  const out: T[] = new Array(jobs.length)
  let next = 0
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++
      out[i] = await jobs[i]!()
    }
  }
  await Promise.all([worker(), worker()])
  return out
}

/** Every command that touches the database, given its URL by option. */
function commands(url: string, dir: string): { name: string; args: string[] }[] {
  return [
    { name: 'up', args: ['up', '--app', app, '--database-url', url, '--no-dashboard'] },
    { name: 'status', args: ['status', '--database-url', url] },
    { name: 'migrate', args: ['migrate', '--database-url', url] },
    { name: 'balancer', args: ['balancer', '--port', '0', '--database-url', url] },
    { name: 'dashboard', args: ['dashboard', '--port', '0', '--password', 'dashboard-pass-1', '--database-url', url] },
    { name: 'nginx', args: ['nginx', '--database-url', url] },
    { name: 'nginx --watch', args: ['nginx', '--watch', '--out', join(dir, 'nginx.conf'), '--database-url', url] },
  ]
}

interface Case {
  kind: string
  url: string
  password: string
  /** What the one line says after "cannot reach PostgreSQL at ". */
  says: string
}

/** stderr without the warnings about secrets given as arguments (cli.secrets.test.ts), which come first. */
function errorLines(stderr: string): string[] {
  return stderr.trimEnd().split('\n').filter((l) => !l.startsWith('chorus: warning: '))
}

function expectOneLine(run: Run, c: Case, what: string): void {
  const lines = errorLines(run.stderr)
  expect(lines, `${what}: ${run.stderr}`).toEqual([`chorus: CHORUS_ERR_DB_CONNECT cannot reach PostgreSQL at ${c.says}`])
  expect(run.code, what).toBe(3)
  expect(run.stdout, what).toBe('')
  expect(run.stderr, what).not.toContain(c.password)
  expect(run.stderr, what).not.toMatch(/^\s+at /m)
}

describe('chorus with a database it cannot reach', () => {
  let dir = ''
  let cases: Case[] = []

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'chorus-cli-errors-'))
    await chmod(dir, 0o755)
    const refused = await freeBase(0) // bound and released: nothing listens there
    const server = new URL(serverUrl()) // the test PostgreSQL, which checks passwords (scram-sha-256)
    const wrong = new URL(serverUrl())
    wrong.password = 'not-the-password-7f3a'
    cases = [
      { kind: 'a refused port', url: `postgres://app:s3cret-refused@127.0.0.1:${refused}/app`, password: 's3cret-refused', says: `127.0.0.1:${refused}/app (user app): connection refused` },
      { kind: 'an unknown host', url: 'postgres://app:s3cret-unknown@db.chorus-test.invalid:5432/app', password: 's3cret-unknown', says: 'db.chorus-test.invalid:5432/app (user app): unknown host' },
      {
        kind: 'a wrong password',
        url: wrong.toString(),
        password: 'not-the-password-7f3a',
        says: `127.0.0.1:${server.port}/postgres (user postgres): password authentication failed for user "postgres"`,
      },
      { kind: 'a string that is not a URL', url: 'app:s3cret-nourl@db.example:5432/app', password: 's3cret-nourl', says: `<not a URL>: ${EXPECTED_URL}` },
      { kind: 'a URL of another scheme', url: 'http://app:s3cret-http@db.example/app', password: 's3cret-http', says: `http://app:***@db.example/app: ${EXPECTED_URL}` },
    ]
  })

  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  for (const kind of ['a refused port', 'an unknown host', 'a wrong password', 'a string that is not a URL', 'a URL of another scheme']) {
    it(`every command given ${kind} prints one line with CHORUS_ERR_DB_CONNECT, the host and the reason, no password, no stack, and exits with 3`, async () => {
      const c = cases.find((x) => x.kind === kind)!
      const list = commands(c.url, dir)
      const runs = await twoAtATime(list.map((cmd) => () => chorus(cmd.args, dir)))
      runs.forEach((run, i) => expectOneLine(run, c, list[i]!.name))
    }, 150_000) // seven real CLI processes, two at a time: bounded, but not tight on a busy machine
  }

  it('reads DATABASE_URL the same way: up and status say the same line', async () => {
    const c = cases[0]!
    const runs = await twoAtATime([['up', '--app', app, '--no-dashboard'], ['status']].map((args) => () => chorus(args, dir, { DATABASE_URL: c.url })))
    runs.forEach((run, i) => expectOneLine(run, c, `DATABASE_URL, command ${i}`))
  })

  it('checks CHORUS_DIRECT_URL too when it is set apart from the database URL', async () => {
    const c = cases[0]!
    const db = await testDatabase()
    try {
      const run = await chorus(['migrate', '--database-url', db.url], dir, { CHORUS_DIRECT_URL: c.url })
      expectOneLine(run, c, 'migrate with a bad direct URL')
    } finally {
      await db.drop()
    }
  })

  it('names each host of a multi-host URL with its own reason, and does not wait for ever when none answers', async () => {
    const refused = await freeBase(0)
    const c: Case = {
      kind: 'multi-host',
      url: `postgres://app:s3cret-multi@127.0.0.1:${refused},db.chorus-test.invalid:5433/app?target_session_attrs=read-write`,
      password: 's3cret-multi',
      says: `127.0.0.1:${refused},db.chorus-test.invalid:5433/app (user app): 127.0.0.1:${refused} connection refused; db.chorus-test.invalid:5433 unknown host`,
    }
    expectOneLine(await chorus(['status', '--database-url', c.url], dir), c, 'status')
    const both: Case = { ...c, url: `postgres://app:s3cret-multi@127.0.0.1:${refused},127.0.0.1:${refused}/app`, says: `127.0.0.1:${refused},127.0.0.1:${refused}/app (user app): connection refused` }
    expectOneLine(await chorus(['migrate', '--database-url', both.url], dir), both, 'migrate')
  })

  it('with --debug, prints the same first line, then the stack and the driver error it was caused by', async () => {
    for (const c of cases.slice(0, 3)) {
      const run = await chorus(['--debug', 'status', '--database-url', c.url], dir)
      const lines = errorLines(run.stderr)
      expect(lines[0], run.stderr).toBe(`chorus: CHORUS_ERR_DB_CONNECT cannot reach PostgreSQL at ${c.says}`)
      expect(run.stderr).toMatch(/^\s+at /m)
      expect(run.stderr).toMatch(/^caused by: /m)
      expect(run.stderr).not.toContain(c.password)
      expect(run.code).toBe(3)
    }
    // --debug after the command works too.
    const after = await chorus(['migrate', '--database-url', cases[0]!.url, '--debug'], dir)
    expect(after.stderr).toMatch(/^\s+at /m)
    expect(after.code).toBe(3)
  })
})

describe('chorus exit codes', () => {
  let dir = ''
  let db: TestDatabase | undefined

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'chorus-cli-exit-'))
  })

  afterAll(async () => {
    await db?.drop()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  it('lists the exit codes in --help and exits with 0', async () => {
    const run = await chorus(['--help'], dir)
    expect(run.code).toBe(0)
    expect(run.stdout).toMatch(/^Exit codes:$/m)
    expect(run.stdout).toMatch(/^ {2}3 {2}PostgreSQL unreachable \(CHORUS_ERR_DB_CONNECT\)/m)
    expect(run.stdout).toMatch(/--debug/)
  })

  it('exits with 2 on a usage error, in one line', async () => {
    for (const args of [['status', '--bogus'], ['nginx', '--watch'], ['up', '--app', join(dir, 'missing.mjs')], ['status']]) {
      const run = await chorus(args, dir)
      expect(run.code, `${args.join(' ')}: ${run.stderr}`).toBe(2)
      expect(run.stderr.trimEnd().split('\n'), args.join(' ')).toHaveLength(1)
      expect(run.stderr).toMatch(/^chorus: /)
    }
  })

  it('says an unexpected error in one line, with the hint to run with --debug, and exits with 1', async () => {
    db = await testDatabase()
    const out = join(dir, 'no-such-dir', 'nginx.conf')
    const run = await chorus(['nginx', '--out', out, '--database-url', db.url], dir)
    expect(run.code, run.stderr).toBe(1)
    const lines = errorLines(run.stderr)
    expect(lines, run.stderr).toHaveLength(1)
    expect(lines[0]).toMatch(/^chorus: unexpected Error: ENOENT: .*\(run with --debug for the stack\)$/)
    const debug = await chorus(['nginx', '--out', out, '--database-url', db.url, '--debug'], dir)
    expect(debug.code).toBe(1)
    expect(debug.stderr).toMatch(/^\s+at /m)
  })
})

describe('createCluster with a database it cannot reach', () => {
  function attempt(url: string): Promise<{ name?: string; code?: string; message?: string; ok?: boolean }> {
    const script = `
      import { createCluster } from ${JSON.stringify(join(root, 'dist/index.js'))}
      try {
        const c = await createCluster({ databaseUrl: process.argv[1], instanceId: 'cli-errors-1', secret: 'a-secret-of-32-characters-------', logLevel: 'silent' })
        await c.close()
        console.log(JSON.stringify({ ok: true }))
      } catch (err) {
        console.log(JSON.stringify({ name: err.name, code: err.code, message: err.message }))
      }`
    return new Promise((resolve, reject) => {
      execFile(process.execPath, ['--input-type=module', '-e', script, url], { env: env(), timeout: 60_000 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`${err.message}\n${stderr}`))
        else resolve(JSON.parse(stdout.trim().split('\n').pop()!) as never)
      })
    })
  }

  it('throws CHORUS_ERR_DB_CONNECT naming the host and the reason, without the password', async () => {
    const refused = await freeBase(0)
    const wrong = new URL(serverUrl())
    wrong.password = 'not-the-password-7f3a'
    const cases = [
      { url: `postgres://app:s3cret-refused@127.0.0.1:${refused}/app`, password: 's3cret-refused', says: `127.0.0.1:${refused}/app (user app): connection refused` },
      { url: 'postgres://app:s3cret-unknown@db.chorus-test.invalid:5432/app', password: 's3cret-unknown', says: 'db.chorus-test.invalid:5432/app (user app): unknown host' },
      { url: wrong.toString(), password: 'not-the-password-7f3a', says: `127.0.0.1:${wrong.port}/postgres (user postgres): password authentication failed for user "postgres"` },
    ]
    for (const c of cases) {
      const got = await attempt(c.url)
      expect(got.name, JSON.stringify(got)).toBe('ChorusError')
      expect(got.code).toBe('CHORUS_ERR_DB_CONNECT')
      expect(got.message).not.toContain(c.password)
      expect(got.message).toBe(`cannot reach PostgreSQL at ${c.says}`)
    }
  })

  it('refuses a string that is not a postgres:// URL as an invalid option, without echoing it', async () => {
    const got = await attempt('app:s3cret-nourl@db.example:5432/app')
    expect(got.code).toBe('CHORUS_ERR_OPTIONS_INVALID')
    expect(got.message).not.toContain('s3cret-nourl')
  })
})
