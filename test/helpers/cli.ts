// The real `chorus` command, run as a process: its exit code and output, with a clean environment
// (no database URL, direct URL or dashboard password inherited unless given); `chorus up` run as
// from a terminal, and the processes a run left in its directory.
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { readdir, readFile, readlink } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

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

/**
 * `chorus up` started as a terminal would: in a process group of its own (`interrupt()` is the
 * terminal's Ctrl-C, SIGINT to the whole foreground group), its stdout and stderr kept in `output`.
 */
export class Up {
  readonly child: ChildProcess
  output = ''
  readonly exited: Promise<number | null>

  constructor(args: string[], cwd: string, extra: Record<string, string> = {}) {
    this.child = spawn(process.execPath, [bin, 'up', ...args], { cwd, env: env(extra), detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
    this.child.stdout!.on('data', (c: Buffer) => (this.output += c.toString()))
    this.child.stderr!.on('data', (c: Buffer) => (this.output += c.toString()))
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)))
  }

  /** Bounded wait for `re` in the output (from `from` on); rejects with the output after `timeoutMs`. */
  async waitFor(re: RegExp, timeoutMs = 60_000, from = 0): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const found = re.exec(this.output.slice(from))
      if (found) return found
      if (Date.now() > deadline || this.child.exitCode !== null) throw new Error(`no ${re} in the output of chorus up within ${timeoutMs} ms:\n${this.output}`)
      await sleep(50)
    }
  }

  /** Ctrl-C in a terminal: SIGINT to the process group. */
  interrupt(): void {
    process.kill(-this.child.pid!, 'SIGINT')
  }

  /** Lines at level WARN or above, and stack-trace lines, in the output from `from` on. */
  warnings(from = 0): string[] {
    return this.output.slice(from).split('\n').filter((l) => /\b(WARN|ERROR|FATAL)\b|^\s*at |"level":[456]0/.test(l))
  }
}

/** Processes whose working directory is `dir` or under it: everything a `chorus up` run there started (postgres works in its data directory). */
export async function processesIn(dir: string): Promise<{ pid: number; cmd: string }[]> {
  const found: { pid: number; cmd: string }[] = []
  for (const entry of await readdir('/proc')) {
    const pid = Number(entry)
    if (!Number.isInteger(pid) || pid === process.pid) continue
    try {
      const cwd = await readlink(`/proc/${pid}/cwd`)
      if (cwd !== dir && !cwd.startsWith(dir + '/')) continue
      found.push({ pid, cmd: (await readFile(`/proc/${pid}/cmdline`, 'utf8')).replaceAll('\0', ' ').trim() })
    } catch {
      // Gone meanwhile, or not ours to read.
    }
  }
  return found
}

/** After a test: SIGKILL whatever a run left in `dir` (a failed test must not leak processes into the next). */
export async function killProcessesIn(dir: string): Promise<void> {
  for (const p of await processesIn(dir)) {
    try {
      process.kill(p.pid, 'SIGKILL')
    } catch {
      // Gone already.
    }
  }
}

/** GET `url` as JSON; null when it does not answer 2xx. */
export async function getJson<T>(url: string): Promise<T | null> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5000) })
    return res.ok ? ((await res.json()) as T) : null
  } catch {
    return null
  }
}
