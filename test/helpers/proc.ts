// Real processes for tests: spawn a Node script, read the JSON lines it prints, send it commands
// as JSON lines on stdin, kill it for real.
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'

export interface Line {
  [key: string]: unknown
  type: string
}

export class Proc {
  readonly child: ChildProcess
  readonly lines: Line[] = []
  readonly stderr: string[] = []
  #waiters: { pred: (l: Line) => boolean; resolve: (l: Line) => void }[] = []
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>

  constructor(script: string, args: string[] = [], env: Record<string, string> = {}) {
    this.child = spawn(process.execPath, [script, ...args], {
      env: { ...process.env, CHORUS_LOG_LEVEL: process.env.CHORUS_LOG_LEVEL ?? 'warn', ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    createInterface({ input: this.child.stdout! }).on('line', (text) => {
      let line: Line
      try {
        line = JSON.parse(text) as Line
      } catch {
        line = { type: 'text', text }
      }
      this.lines.push(line)
      for (const w of [...this.#waiters]) {
        if (w.pred(line)) {
          this.#waiters.splice(this.#waiters.indexOf(w), 1)
          w.resolve(line)
        }
      }
    })
    createInterface({ input: this.child.stderr! }).on('line', (text) => {
      this.stderr.push(text)
      if (this.stderr.length > 200) this.stderr.shift()
      if (process.env.CHORUS_TEST_VERBOSE) process.stderr.write(`[child ${this.child.pid}] ${text}\n`)
    })
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })))
  }

  /** Resolves with the first line (already printed or future) matching `pred`. */
  waitFor(pred: (l: Line) => boolean, timeoutMs = 30_000, what = 'a line'): Promise<Line> {
    const found = this.lines.find(pred)
    if (found) return Promise.resolve(found)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w.resolve !== done)
        reject(new Error(`timed out waiting for ${what}; stderr tail:\n${this.stderr.slice(-20).join('\n')}`))
      }, timeoutMs)
      const done = (l: Line) => {
        clearTimeout(timer)
        resolve(l)
      }
      this.#waiters.push({ pred, resolve: done })
    })
  }

  send(command: Record<string, unknown>): void {
    this.child.stdin!.write(JSON.stringify(command) + '\n')
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal)
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return
    this.kill('SIGTERM')
    const t = setTimeout(() => this.kill('SIGKILL'), 10_000)
    await this.exited
    clearTimeout(t)
  }
}
