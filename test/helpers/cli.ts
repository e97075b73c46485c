// The real `chorus` command, run as a process: its exit code and output, with a clean environment
// (no database URL, direct URL or dashboard password inherited unless given).
import { execFile } from 'node:child_process'
import { join } from 'node:path'

export const root = new URL('../..', import.meta.url).pathname
export const bin = join(root, 'bin/chorus.js')

export interface Run {
  code: number | null
  stdout: string
  stderr: string
}

export function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1', CHORUS_LOG_LEVEL: 'warn', ...extra }
  for (const name of ['DATABASE_URL', 'CHORUS_DIRECT_URL', 'CHORUS_DASHBOARD_PASSWORD']) if (!(name in extra)) delete e[name]
  return e
}

export function chorus(args: string[], cwd: string, extra: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { cwd, env: env(extra), timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr })
    })
  })
}
