// What every benchmark here shares: options from flags or the environment, one embedded
// PostgreSQL in a temporary directory, child processes driven over IPC, cleanup of all of it on
// any exit, a hard deadline, and plain-text tables.
import { fork } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { startEmbeddedPostgres } from '../../dist/db/embedded.js'

/** Wall-clock milliseconds with sub-millisecond precision, comparable between processes on one machine. */
export const now = () => performance.timeOrigin + performance.now()

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// ---- options --------------------------------------------------------------------------------

/**
 * Reads `--name value` (or `--name=value`) from the command line, else env `<PREFIX>_NAME`
 * (dashes become underscores), else the default. Numbers stay numbers.
 */
export function options(prefix, defaults, argv = process.argv.slice(2)) {
  const out = { ...defaults }
  const given = new Map()
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (!arg.startsWith('--')) continue
    const eq = arg.indexOf('=')
    if (eq > 0) given.set(arg.slice(2, eq), arg.slice(eq + 1))
    else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) given.set(arg.slice(2), argv[++i])
    else given.set(arg.slice(2), 'true')
  }
  if (given.has('help')) {
    process.stdout.write(`options (flag, or env ${prefix}_<NAME>):\n`)
    for (const [k, v] of Object.entries(defaults)) process.stdout.write(`  --${k} ${JSON.stringify(v)}\n`)
    process.exit(0)
  }
  for (const key of given.keys()) {
    if (!(key in defaults)) throw new Error(`unknown option --${key} (try --help)`)
  }
  for (const [key, def] of Object.entries(defaults)) {
    const raw = given.get(key) ?? process.env[`${prefix}_${key.toUpperCase().replace(/-/g, '_')}`]
    if (raw === undefined || raw === '') continue
    if (typeof def === 'number') {
      const n = Number(raw)
      if (!Number.isFinite(n)) throw new Error(`--${key} must be a number, got "${raw}"`)
      out[key] = n
    } else if (typeof def === 'boolean') {
      out[key] = raw !== 'false' && raw !== '0'
    } else {
      out[key] = raw
    }
  }
  return out
}

// ---- cleanup and deadline -------------------------------------------------------------------

const cleanups = []
let exiting = false

/** Registers `fn` to run (last registered, first run) when the benchmark ends, however it ends. */
export function onCleanup(fn) {
  cleanups.push(fn)
}

async function runCleanups() {
  while (cleanups.length > 0) {
    const fn = cleanups.pop()
    try {
      await fn()
    } catch (err) {
      process.stderr.write(`cleanup failed: ${err?.message ?? err}\n`)
    }
  }
}

/**
 * Runs `main` under a hard deadline; whatever happens (success, error, deadline, Ctrl-C, SIGTERM),
 * every registered cleanup runs before the process exits.
 */
export async function runMain(main, { deadlineMs }) {
  const finish = async (code, message) => {
    if (exiting) return
    exiting = true
    if (message) process.stderr.write(`${message}\n`)
    await runCleanups()
    process.exit(code)
  }
  const timer = setTimeout(() => void finish(2, `deadline of ${Math.round(deadlineMs / 1000)} s reached; stopping`), deadlineMs)
  timer.unref()
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.once(sig, () => void finish(130, `${sig}: stopping`))
  process.on('uncaughtException', (err) => void finish(1, `error: ${err?.stack ?? err}`))
  process.on('unhandledRejection', (err) => void finish(1, `error: ${err?.stack ?? err}`))
  try {
    await main()
    await finish(0)
  } catch (err) {
    await finish(1, `error: ${err?.stack ?? err}`)
  }
}

// ---- the database ---------------------------------------------------------------------------

/**
 * Starts an embedded PostgreSQL on 127.0.0.1 in a fresh temporary directory, with the same
 * settings Chorus uses for its own embedded database unless `settings` overrides some.
 */
export async function startDatabase(settings = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'chorus-bench-'))
  onCleanup(() => rm(dir, { recursive: true, force: true }))
  await chmod(dir, 0o755) // the postgres user must be able to reach the data directory
  const dataDir = join(dir, 'pg')
  const pg = await startEmbeddedPostgres({ dataDir, port: 0, settings })
  onCleanup(() => pg.stop())
  return { url: pg.url, dataDir, cpu: () => databaseCpuMs(dataDir), describe: () => describeDatabase(pg.url) }
}

/** One line naming the server version and the settings that weigh on commit-heavy benchmarks. */
async function describeDatabase(url) {
  const { default: postgres } = await import('postgres')
  const sql = postgres(url, { max: 1, onnotice: () => undefined })
  try {
    const [row] = await sql`
      select current_setting('server_version') as version, current_setting('fsync') as fsync,
             current_setting('synchronous_commit') as synchronous_commit, current_setting('shared_buffers') as shared_buffers`
    return `PostgreSQL ${row.version} (embedded; fsync ${row.fsync}, synchronous_commit ${row.synchronous_commit}, shared_buffers ${row.shared_buffers})`
  } finally {
    await sql.end({ timeout: 1 })
  }
}

/** One line on the machine: Node version, CPUs, and load averages (other work on the machine skews results). */
export function machine() {
  const load = loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')
  return `Node ${process.version}, ${availableParallelism()} CPUs (${cpus()[0]?.model?.trim() ?? 'unknown'}), load average ${load}`
}

/** CPU time (user + system, ms) used so far by the server and its live backends; null where /proc is missing. */
function databaseCpuMs(dataDir) {
  try {
    const postmaster = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0])
    let ticks = 0
    for (const name of readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue
      let stat
      try {
        stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      } catch {
        continue
      }
      // Fields after the parenthesised command: state ppid … utime(14) stime(15), counted from 1.
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(name) === postmaster || Number(f[1]) === postmaster) ticks += Number(f[11]) + Number(f[12])
    }
    return (ticks * 1000) / 100 // USER_HZ is 100 on Linux
  } catch {
    return null
  }
}

// ---- child processes ------------------------------------------------------------------------

/**
 * A Node child process driven over IPC: `call(msg)` sends `{...msg, id}` and resolves with the
 * child's reply `{id, ...}`; other messages from the child go to `onMessage`. The child is
 * killed (SIGKILL) at cleanup if still running, and exits by itself if this process goes away.
 */
export class Child {
  #next = 1
  #pending = new Map()
  #listeners = new Set()

  constructor(script, args = [], env = {}, execArgv = []) {
    this.process = fork(script, args, {
      env: { ...process.env, ...env },
      execArgv: [...process.execArgv, ...execArgv],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'advanced',
    })
    this.pid = this.process.pid
    this.exited = new Promise((resolve) => this.process.once('exit', (code, signal) => resolve({ code, signal })))
    this.process.on('message', (msg) => {
      if (msg && msg.id !== undefined && this.#pending.has(msg.id)) {
        const { resolve, reject } = this.#pending.get(msg.id)
        this.#pending.delete(msg.id)
        if (msg.error) reject(new Error(`child ${this.pid}: ${msg.error}`))
        else resolve(msg)
        return
      }
      for (const l of this.#listeners) l(msg)
    })
    this.process.once('exit', (code, signal) => {
      for (const { reject } of this.#pending.values()) reject(new Error(`child ${this.pid} exited (${signal ?? code})`))
      this.#pending.clear()
    })
    onCleanup(() => this.kill('SIGKILL'))
  }

  get running() {
    return this.process.exitCode === null && this.process.signalCode === null
  }

  onMessage(fn) {
    this.#listeners.add(fn)
    return () => this.#listeners.delete(fn)
  }

  /** Resolves with the first message from the child that satisfies `pred`. */
  waitFor(pred, timeoutMs, what) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off()
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} from child ${this.pid}`))
      }, timeoutMs)
      const off = this.onMessage((msg) => {
        if (!pred(msg)) return
        clearTimeout(timer)
        off()
        resolve(msg)
      })
    })
  }

  call(msg, timeoutMs = 120_000) {
    const id = this.#next++
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id)
        reject(new Error(`child ${this.pid} did not answer ${msg.cmd} within ${timeoutMs} ms`))
      }, timeoutMs)
      this.#pending.set(id, {
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      })
      this.process.send({ ...msg, id })
    })
  }

  kill(signal = 'SIGKILL') {
    if (this.running) this.process.kill(signal)
  }

  /** Asks the child to stop by itself (`stop` command), then kills it if it has not within `graceMs`. */
  async stop(graceMs = 5000) {
    if (!this.running) return
    this.call({ cmd: 'stop' }, graceMs).catch(() => undefined)
    const timer = setTimeout(() => this.kill('SIGKILL'), graceMs)
    await this.exited
    clearTimeout(timer)
  }
}

/**
 * The child side: answers `{cmd, id}` messages with `handlers[cmd](msg)`'s result, and exits when
 * the parent goes away (so nothing outlives a killed benchmark).
 */
export function serveParent(handlers) {
  process.on('disconnect', () => process.exit(0))
  process.on('message', async (msg) => {
    const handler = handlers[msg?.cmd]
    try {
      if (!handler) throw new Error(`unknown command ${msg?.cmd}`)
      const result = await handler(msg)
      process.send?.({ ...result, id: msg.id })
    } catch (err) {
      process.send?.({ id: msg.id, error: err?.stack ?? String(err) })
    }
  })
}

// ---- numbers and tables ---------------------------------------------------------------------

/** The q-quantile (0..1) of numbers sorted ascending, nearest-rank. */
export function quantile(sorted, q) {
  if (sorted.length === 0) return NaN
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))
  return sorted[rank]
}

export function median(values) {
  return quantile([...values].sort((a, b) => a - b), 0.5)
}

/** Formats a number for a table cell: `digits` decimals, thousands separated, '–' when missing. */
export function fmt(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–'
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

/** Renders rows (arrays of strings) under headers as an aligned plain-text table; numbers align right. */
export function table(headers, rows) {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)))
  const numeric = headers.map((_, i) => rows.every((r) => /^[-–+\d.,×%x ]*$/.test(String(r[i]))))
  const line = (cells) => cells.map((c, i) => (numeric[i] ? String(c).padStart(widths[i]) : String(c).padEnd(widths[i]))).join('  ')
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n')
}
