/**
 * One process run by `chorus up` (an instance, the balancer, the dashboard), supervised: started
 * through runner.js in a process group of its own, so a terminal's Ctrl-C reaches only `chorus up`,
 * which stops everything in order; restarted with a doubling delay when it exits unasked; given up
 * after MAX_QUICK_CRASHES exits in a row that each came within QUICK_CRASH_MS of its start. Each
 * restart and the giving up are one line. It ends by itself if `chorus up` goes (runner.js). A
 * restart after a crash takes a warm spare when one is ready (Spare): a process that has imported
 * the Chorus library already, so the instance serves again sooner.
 *
 * Written here rather than taken from a process manager: pm2 and nodemon are programs, not
 * libraries, and this needs `chorus up`'s readiness probe and its graceful stop (SIGTERM = drain).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { request } from 'node:http'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { signal } from '../processes.js'
import { Machine } from '../util/machine.js'
import { defer, type Deferred } from '../util/deferred.js'
import { eachLine, type Level } from './output.js'

/**
 * The states of a supervised process and where each may be entered from:
 * - `idle`: not started yet (the initial state).
 * - `starting`: spawned, its readiness probe not passed yet.
 * - `running`: ready.
 * - `backoff`: exited unasked; started again after a delay.
 * - `failed`: exited unasked too often right after starting; not restarted until `start()`.
 * - `stopping`: asked to stop (SIGTERM to its group), waiting for it to exit.
 * - `stopped`: exited when asked; not restarted until `start()`.
 */
const enteredFrom = {
  idle: [],
  starting: ['idle', 'backoff', 'failed', 'stopped'],
  running: ['starting'],
  backoff: ['starting', 'running'],
  failed: ['starting', 'running'],
  stopping: ['starting', 'running'],
  stopped: ['idle', 'stopping', 'backoff', 'failed'],
} as const
export type SupervisedState = keyof typeof enteredFrom

export function supervisedMachine(name = 'process'): Machine<SupervisedState> {
  return new Machine<SupervisedState>(name, enteredFrom, 'idle')
}

/** Exits within this long of the start count as immediate crashes… */
export const QUICK_CRASH_MS = 5_000
/** …and so do exits before the process was ever ready, within this long (a start is slow on a loaded machine). */
export const STARTUP_CRASH_MS = 60_000
/** Immediate crashes in a row after which a process is given up. */
export const MAX_QUICK_CRASHES = 5
/** The first restart delay, doubled after each immediate crash up to MAX_RESTART_DELAY_MS. */
export const RESTART_DELAY_MS = 100
export const MAX_RESTART_DELAY_MS = 5_000
const PROBE_EVERY_MS = 100

const runner = join(dirname(fileURLToPath(import.meta.url)), 'runner.js')

export interface SupervisedOptions {
  name: string
  /** runner.js arguments: the entry file and its arguments. */
  args: string[]
  env: NodeJS.ProcessEnv
  /** One readiness probe: true when the process is ready. */
  ready(): Promise<boolean>
  /** Milliseconds between SIGTERM and SIGKILL when stopping. */
  stopTimeoutMs: number
  line(name: string, text: string, stream: 'stdout' | 'stderr'): void
  say(level: Level, msg: string): void
  /** Called once the process is given up (state `failed`). */
  onGiveUp(): void
  /** Warm spares for restarts after a crash. */
  spare?: Spare
}

export class Supervised {
  readonly name: string
  readonly #o: SupervisedOptions
  readonly #machine: Machine<SupervisedState>
  #child: ChildProcess | null = null
  #startedAt = 0
  #exitedAt = 0
  #quickCrashes = 0
  #restarts = 0
  #timer: NodeJS.Timeout | null = null
  #exited: Deferred<void> = defer()
  #changed: Deferred<void> = defer()
  #closed = false

  constructor(o: SupervisedOptions) {
    this.name = o.name
    this.#o = o
    this.#machine = new Machine<SupervisedState>(o.name, enteredFrom, 'idle', () => {
      const changed = this.#changed
      this.#changed = defer()
      changed.resolve()
    })
  }

  get state(): SupervisedState {
    return this.#machine.state
  }

  /** The pid of the current process, if one runs. */
  get pid(): number | undefined {
    return this.#child?.pid
  }

  /** Starts the process; `warm`: from a spare when one is ready. Does nothing once closed. */
  start(warm = false): void {
    if (this.#closed) return
    this.#clearTimer()
    this.#machine.to('starting')
    this.#startedAt = Date.now()
    const spare = warm ? this.#o.spare?.take() : undefined
    const child = spare ?? spawn(process.execPath, [runner, ...this.#o.args], { detached: true, stdio: ['pipe', 'pipe', 'pipe'], env: this.#o.env })
    if (spare) spare.stdin!.write(JSON.stringify({ args: this.#o.args, env: this.#o.env }) + '\n')
    this.#child = child
    this.#exited = defer()
    eachLine(child.stdout!, (text) => this.#o.line(this.name, text, 'stdout'))
    eachLine(child.stderr!, (text) => this.#o.line(this.name, text, 'stderr'))
    child.stdin!.on('error', () => undefined)
    child.once('error', (err) => {
      this.#o.say('error', `${this.name} could not be started: ${err.message}`)
      if (child.exitCode === null && child.signalCode === null && child.pid === undefined) this.#onExit(child, null, null)
    })
    child.once('exit', (code, signal) => this.#onExit(child, code, signal))
    void this.#probe(child)
  }

  /** Resolves once the process is ready; rejects when it ends up `failed` or `stopped` first, or after `timeoutMs`. */
  async whenReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      if (this.state === 'running') return
      if (this.state === 'failed' || this.state === 'stopped' || this.state === 'stopping') throw new Error(`${this.name} is ${this.state}`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`${this.name} was not ready within ${Math.round(timeoutMs / 1000)} s`)
      await Promise.race([this.#changed.promise, sleep(left, undefined, { ref: false })])
    }
  }

  /** Stops the process (SIGTERM to its group, SIGKILL after stopTimeoutMs); it is not restarted. */
  async stop(): Promise<void> {
    this.#clearTimer()
    if (this.#machine.is('idle', 'backoff', 'failed')) return this.#machine.to('stopped')
    if (this.#machine.is('starting', 'running')) {
      this.#machine.to('stopping')
      this.#signal('SIGTERM')
      const force = setTimeout(() => this.#signal('SIGKILL'), this.#o.stopTimeoutMs)
      void this.#exited.promise.then(() => clearTimeout(force))
    }
    await this.#exited.promise
  }

  /** Stops the process for good: a restart under way or to come does not start it again. */
  close(): Promise<void> {
    this.#closed = true
    return this.stop()
  }

  /** Stop, start, and wait until ready (one step of a rolling restart). */
  async restart(timeoutMs: number): Promise<void> {
    await this.stop()
    this.#quickCrashes = 0
    this.start()
    await this.whenReady(timeoutMs)
  }

  /** SIGKILL to the process group at once (a second Ctrl-C, or `chorus up` exiting). */
  kill(): void {
    this.#clearTimer()
    this.#signal('SIGKILL')
  }

  #signal(sig: NodeJS.Signals): void {
    if (this.#exited.settled) return
    if (!signal(this.#child?.pid, sig, true)) this.#child?.kill(sig)
  }

  async #probe(child: ChildProcess): Promise<void> {
    while (this.#child === child && this.state === 'starting') {
      if (await this.#o.ready().catch(() => false)) {
        if (this.#child === child && this.state === 'starting') this.#ready()
        return
      }
      await sleep(PROBE_EVERY_MS)
    }
  }

  #ready(): void {
    this.#machine.to('running')
    if (this.#restarts > 0 && this.#exitedAt > 0) {
      this.#o.say('info', `${this.name} is back (pid ${this.pid}), ${((Date.now() - this.#exitedAt) / 1000).toFixed(1)} s after it exited`)
    }
    this.#exitedAt = 0
  }

  #onExit(child: ChildProcess, code: number | null, exitSignal: NodeJS.Signals | null): void {
    if (this.#child !== child) return
    // Whatever it started in its group goes with it.
    signal(child.pid, 'SIGKILL', true)
    this.#exited.resolve()
    if (this.#machine.is('stopping')) return this.#machine.to('stopped')
    if (!this.#machine.is('starting', 'running')) return
    this.#exitedAt = Date.now()
    const how = exitSignal ?? `code ${code}`
    const lived = Date.now() - this.#startedAt
    const quick = lived < QUICK_CRASH_MS || (this.#machine.is('starting') && lived < STARTUP_CRASH_MS)
    this.#quickCrashes = quick ? this.#quickCrashes + 1 : 1
    if (this.#quickCrashes >= MAX_QUICK_CRASHES) {
      this.#machine.to('failed')
      this.#o.say('error', `${this.name} exited (${how}) ${this.#quickCrashes} times in a row right after starting; giving up on it`)
      this.#o.onGiveUp()
      return
    }
    const delay = Math.min(RESTART_DELAY_MS * 2 ** (this.#quickCrashes - 1), MAX_RESTART_DELAY_MS)
    this.#machine.to('backoff')
    this.#restarts++
    this.#o.say('warn', `${this.name} exited (${how}); restarting it in ${(delay / 1000).toFixed(1)} s`)
    this.#timer = setTimeout(() => {
      this.#timer = null
      if (this.#machine.is('backoff')) this.start(true)
    }, delay)
  }

  #clearTimer(): void {
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = null
  }
}

/**
 * One warm spare process (`runner --standby`): started REFILL_MS after the previous one was taken
 * (not to compete with the restart it serves), killed by `close()`; it ends by itself when `chorus
 * up` goes. Costs one idle Node process with the Chorus library loaded.
 */
export class Spare {
  static readonly REFILL_MS = 2_000
  readonly #env: NodeJS.ProcessEnv
  #child: ChildProcess | null = null
  #timer: NodeJS.Timeout | null = null
  #closed = false

  constructor(env: NodeJS.ProcessEnv) {
    this.#env = env
  }

  /** Starts a spare after `delayMs`, unless one is there or coming. */
  fill(delayMs = 0): void {
    if (this.#closed || this.#child || this.#timer) return
    this.#timer = setTimeout(() => {
      this.#timer = null
      if (this.#closed) return
      const child = spawn(process.execPath, [runner, '--standby'], { detached: true, stdio: ['pipe', 'pipe', 'pipe'], env: this.#env })
      child.stdin!.on('error', () => undefined)
      child.once('exit', () => {
        if (this.#child === child) this.#child = null
      })
      this.#child = child
    }, delayMs)
  }

  /** The spare, now the caller's, if one runs; another is started later. */
  take(): ChildProcess | undefined {
    const child = this.#child
    this.#child = null
    this.fill(Spare.REFILL_MS)
    return child && child.exitCode === null && child.signalCode === null ? child : undefined
  }

  close(): void {
    this.#closed = true
    if (this.#timer) clearTimeout(this.#timer)
    signal(this.#child?.pid, 'SIGKILL', true)
    this.#child = null
  }
}

/**
 * One HTTP probe of `url` on 127.0.0.1: whether `accept(status)` holds for its answer (false when
 * nothing answers within a second). No keep-alive: a restarted process is asked on a new connection.
 */
export function probeHttp(url: string, accept: (status: number) => boolean): Promise<boolean> {
  return new Promise((done) => {
    const req = request(url, { agent: false, timeout: 1000 }, (res) => {
      res.resume()
      done(accept(res.statusCode ?? 0))
    })
    req.once('timeout', () => req.destroy())
    req.once('error', () => done(false))
    req.end()
  })
}
