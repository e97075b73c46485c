// Runs `chorus dashboard` (the built bin) as its own process, for the dashboard's e2e tests.
import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { eventually } from './cluster.js'

const bin = join(new URL('../..', import.meta.url).pathname, 'bin/chorus.js')

export interface DashboardProcess {
  readonly child: ChildProcess
  readonly url: string
  /** The API token it printed at start. */
  readonly token: string
  /** Everything it wrote so far, stdout and stderr. */
  output(): string
  /** SIGTERM, then waits for it to exit. */
  stop(): Promise<void>
}

/** Resolves once the dashboard printed its URL and token. The password goes through the environment. */
export async function startDashboardProcess(databaseUrl: string, password: string, timeoutMs = 30_000): Promise<DashboardProcess> {
  const child = spawn(process.execPath, [bin, 'dashboard', '--port', '0', '--database-url', databaseUrl], {
    env: { ...process.env, CHORUS_LOG_LEVEL: 'warn', CHORUS_DASHBOARD_PASSWORD: password },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()))
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()))
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  await eventually(() => /API token[^\n]*: (chd_\S+)\n/.test(out), `chorus dashboard to start; output:\n${out}`, timeoutMs, 50)
  return {
    child,
    url: /dashboard on (http:\/\/\S+)/.exec(out)![1]!,
    token: /API token[^\n]*: (chd_\S+)/.exec(out)![1]!,
    output: () => out,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM')
      await exited
    },
  }
}
