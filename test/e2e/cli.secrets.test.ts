// Secrets on the command line show in `ps` to every local user: `chorus` warns in one line for each
// secret given as an argument (never quoting it), and takes each one from a file (--password-file,
// --database-url-file) or the environment (CHORUS_DASHBOARD_PASSWORD, DATABASE_URL) without a word.
import { spawn } from 'node:child_process'
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { eventually } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { bin, chorus, env, root } from '../helpers/cli.js'
import { freeBase } from '../helpers/ports.js'

const PASSWORD_WARNING = 'chorus: warning: --password is visible to every local user in ps; use --password-file or CHORUS_DASHBOARD_PASSWORD'
const URL_WARNING = 'chorus: warning: --database-url holds a password, visible to every local user in ps; use --database-url-file or DATABASE_URL'


const lines = (text: string): string[] => text.trimEnd().split('\n').filter(Boolean)

/** Runs `chorus dashboard` until it listens, asks /api/instances with `password` over Basic, and stops it. */
async function dashboardAnswers(args: string[], cwd: string, extra: Record<string, string>, password: string): Promise<{ right: number; wrong: number; stderr: string }> {
  const child = spawn(process.execPath, [bin, 'dashboard', '--port', '0', ...args], { cwd, env: env(extra), stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
  const exited = new Promise<void>((r) => child.once('exit', () => r()))
  try {
    await eventually(() => /dashboard on http:\/\/\S+\n/.test(stdout) || child.exitCode !== null, `chorus dashboard to start:\n${stdout}${stderr}`, 30_000, 50)
    const url = /dashboard on (http:\/\/\S+)/.exec(stdout)?.[1]
    if (!url) throw new Error(`chorus dashboard did not start:\n${stdout}${stderr}`)
    const ask = async (pw: string) => (await fetch(`${url}/api/instances`, { headers: { authorization: `Basic ${Buffer.from(`admin:${pw}`).toString('base64')}` } })).status
    return { right: await ask(password), wrong: await ask(`${password}-not`), stderr }
  } finally {
    if (child.exitCode === null) child.kill('SIGTERM')
    await exited
  }
}

describe('secrets given to chorus', () => {
  let dir = ''
  let db: TestDatabase

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'chorus-cli-secrets-'))
    await chmod(dir, 0o700)
    db = await testDatabase()
  })

  afterAll(async () => {
    await db?.drop()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  it('warns in one line for each secret given as an argument, before anything else, without quoting it', async () => {
    const refused = await freeBase(0)
    const url = `postgres://app:s3cret-in-argv@127.0.0.1:${refused}/app`
    const run = await chorus(['dashboard', '--port', '0', '--password', 'dashboard-s3cret', '--database-url', url], dir)
    expect(lines(run.stderr)).toEqual([PASSWORD_WARNING, URL_WARNING, `chorus: CHORUS_ERR_DB_CONNECT cannot reach PostgreSQL at 127.0.0.1:${refused}/app (user app): connection refused`])
    expect(run.stderr).not.toContain('s3cret')
    expect(run.code).toBe(3)

    // Every command with --database-url warns the same way; a URL without a password is no secret.
    for (const args of [['status'], ['migrate'], ['nginx'], ['balancer', '--port', '0'], ['up', '--app', join(root, 'examples/hello/server.mjs'), '--no-dashboard']]) {
      const withPassword = await chorus([...args, '--database-url', url], dir)
      expect(lines(withPassword.stderr)[0], args[0]).toBe(URL_WARNING)
      expect(withPassword.stderr).not.toContain('s3cret')
    }
    const noPassword = await chorus(['status', '--database-url', `postgres://app@127.0.0.1:${refused}/app`], dir)
    expect(lines(noPassword.stderr)).toEqual([`chorus: CHORUS_ERR_DB_CONNECT cannot reach PostgreSQL at 127.0.0.1:${refused}/app (user app): connection refused`])
  })

  it('reads the database URL from --database-url-file or DATABASE_URL, without a warning', async () => {
    const file = join(dir, 'database-url')
    await writeFile(file, `${db.url}\n`, { mode: 0o600 })
    const fromFile = await chorus(['migrate', '--database-url-file', file], dir)
    expect(fromFile.stderr).toBe('')
    expect(fromFile.stdout).toMatch(/^schema "chorus" is at version \d+$/m)
    expect(fromFile.code).toBe(0)

    const fromEnv = await chorus(['status', '--json'], dir, { DATABASE_URL: db.url })
    expect(fromEnv.stderr).toBe('')
    expect(JSON.parse(fromEnv.stdout)).toEqual([])
  })

  it('runs the dashboard with its password from --password-file or CHORUS_DASHBOARD_PASSWORD, without a warning', async () => {
    const passwordFile = join(dir, 'dashboard-password')
    const urlFile = join(dir, 'dashboard-database-url')
    await writeFile(passwordFile, 'password-from-a-file\n', { mode: 0o600 })
    await writeFile(urlFile, db.url, { mode: 0o600 })

    const fromFile = await dashboardAnswers(['--password-file', passwordFile, '--database-url-file', urlFile], dir, {}, 'password-from-a-file')
    expect(fromFile).toEqual({ right: 200, wrong: 401, stderr: '' })

    const fromEnv = await dashboardAnswers([], dir, { CHORUS_DASHBOARD_PASSWORD: 'password-from-the-env', DATABASE_URL: db.url }, 'password-from-the-env')
    expect(fromEnv).toEqual({ right: 200, wrong: 401, stderr: '' })
  })

  it('refuses a secret file it cannot read, an empty one, or one given with its option, as a usage error in one line', async () => {
    const empty = join(dir, 'empty')
    await writeFile(empty, '')
    const cases: [string[], string][] = [
      [['status', '--database-url-file', join(dir, 'missing')], `chorus: cannot read --database-url-file ${join(dir, 'missing')}: ENOENT`],
      [['dashboard', '--password-file', empty], `chorus: --password-file ${empty} is empty`],
      [['dashboard', '--password-file', empty, '--password', 'dashboard-s3cret'], "chorus: option '--password-file <path>' cannot be used with option '--password <password>'"],
    ]
    for (const [args, says] of cases) {
      const run = await chorus(args, dir)
      expect(lines(run.stderr), args.join(' ')).toEqual([says])
      expect(run.code).toBe(2)
    }
  })
})
