// Runs the quiz reference app the way `npm start` does — `chorus up` with three instances (or
// `instances`), the balancer and its own embedded PostgreSQL — in a temporary directory, on free ports.
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { freeBase } from './ports.js'

const run = promisify(execFile)
const root = new URL('../..', import.meta.url).pathname
const bin = join(root, 'bin/chorus.js')
const app = join(root, 'examples/quiz/server.mjs')


export interface QuizCluster {
  readonly base: string
  readonly port: number
  readonly dir: string
  readonly secret: string
  readonly output: () => string
  /** Member rows as `chorus status --json` prints them. */
  status(): Promise<{ id: string; status: string; pid: number; url: string }[]>
  /** A client of the cluster's database (schema-qualified queries). */
  databaseUrl(): Promise<string>
  stop(): Promise<void>
}

export async function startQuiz(opts: { sticky?: boolean; env?: Record<string, string>; instances?: number } = {}): Promise<QuizCluster> {
  const instances = opts.instances ?? 3
  const ids = Array.from({ length: instances }, (_, i) => i + 1)
  const dir = await mkdtemp(join(tmpdir(), 'chorus-quiz-'))
  await chmod(dir, 0o755)
  const port = await freeBase(instances)
  const secret = 'quiz-test-secret-0123456789abcdef'
  const env: Record<string, string | undefined> = { ...process.env, NO_COLOR: '1', CHORUS_SECRET: secret, CHORUS_LOG_LEVEL: 'warn', ...opts.env }
  delete env.DATABASE_URL
  const args = [bin, 'up', '--instances', String(instances), '--app', app, '--port', String(port), '--no-dashboard', ...(opts.sticky ? ['--sticky'] : [])]
  const child: ChildProcess = spawn(process.execPath, args, { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()))
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()))
  const exited = new Promise<void>((r) => child.once('exit', () => r()))
  const base = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 90_000
  for (;;) {
    const ready = await Promise.all(ids.map(async (i) => {
      try {
        return (await fetch(`http://127.0.0.1:${port + i}/health/ready`)).ok
      } catch {
        return false
      }
    }))
    if (ready.every(Boolean)) break
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`the quiz cluster did not start:\n${out.slice(-3000)}`)
    await new Promise((r) => setTimeout(r, 250))
  }
  const status = async () => JSON.parse((await run(process.execPath, [bin, 'status', '--json'], { cwd: dir, env: env as NodeJS.ProcessEnv })).stdout)
  // Wait until the balancer sees them all.
  for (let i = 0; i < 100; i++) {
    const seen = new Set<string>()
    for (let j = 0; j < 6; j++) {
      try {
        seen.add(((await (await fetch(`${base}/api/instance`)).json()) as { instance: string }).instance)
      } catch {
        /* not yet */
      }
    }
    if (seen.size === instances) break
    await new Promise((r) => setTimeout(r, 200))
  }
  return {
    base,
    port,
    dir,
    secret,
    output: () => out,
    status,
    async databaseUrl() {
      const up = JSON.parse(await (await import('node:fs/promises')).readFile(join(dir, '.chorus/up.json'), 'utf8')) as { databaseUrl: string }
      return up.databaseUrl
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGINT')
      const t = setTimeout(() => child.kill('SIGKILL'), 30_000)
      await exited
      clearTimeout(t)
      await rm(dir, { recursive: true, force: true })
    },
  }
}

export interface QuizUser {
  cookie: string
  user: string
  role: string
  instance: string
  /** Sent in X-CSRF-Token with every state-changing request. */
  csrfToken: string
  stompToken: string
}

/** Logs in over HTTP; returns the session cookie and the /api/me answer. */
export async function login(base: string, name: string, password: string): Promise<QuizUser> {
  const res = await fetch(`${base}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name, password }) })
  if (!res.ok) throw new Error(`login ${name}: ${res.status} ${await res.text()}`)
  return { cookie: res.headers.get('set-cookie')!.split(';')[0]!, ...((await res.json()) as Omit<QuizUser, 'cookie'>) }
}

/** The headers of a state-changing request as `who`: the session cookie and its CSRF token, and a JSON content type unless `json` is false. */
export function asUser(who: Pick<QuizUser, 'cookie' | 'csrfToken'>, json = true): Record<string, string> {
  return { cookie: who.cookie, 'x-csrf-token': who.csrfToken, ...(json ? { 'content-type': 'application/json' } : {}) }
}
