/**
 * `chorus up`: one terminal, one command, a whole cluster on this machine, run as a process runner.
 * Checks the app and every port first; then starts the embedded PostgreSQL (unless a URL is given),
 * migrates once, and runs N instances of the app, the balancer and the dashboard as supervised
 * child processes (supervisor.ts: restarted when they crash, given up after repeated immediate
 * crashes, which ends the run unless `--watch` waits for the next change). `--watch` restarts the
 * instances one at a time on a source change. Ctrl-C or SIGTERM stops everything in the reverse
 * order of its start — dashboard, balancer, instances (each drains and leaves), PostgreSQL last —
 * and so does any failure on the way: nothing started is left running.
 */
import { randomBytes } from 'node:crypto'
import { watch, type FSWatcher } from 'node:fs'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { dirname, join, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { generatePassword } from '../dashboard/auth.js'
import { assertSession, openSql } from '../db/connect.js'
import { findEmbedded, startEmbeddedPostgres, type EmbeddedPostgres } from '../db/embedded.js'
import { migrate } from '../db/migrate.js'
import type { LogFormat } from '../log.js'
import { signal } from '../processes.js'
import { defer } from '../util/deferred.js'
import { Rerun } from '../util/rerun.js'
import { pushConfigDirectory } from './config.js'
import { reachDatabase, reachDirect, STATE_DIR, UP_FILE, type UpState } from './locate.js'
import { Output } from './output.js'
import { assertPortsFree, portFree, resolveApp, type PortNeed } from './preflight.js'
import { probeHttp, Spare, Supervised } from './supervisor.js'

export interface UpOptions {
  instances: number
  app: string
  port: number
  databaseUrl?: string
  dataDir?: string
  pgPort?: number
  schema: string
  roles?: string
  /** Milliseconds to wait for a process to exit after SIGTERM before SIGKILL. Default 30 s (above closeTimeoutMs). */
  stopTimeoutMs?: number
  /** Start the balancer on `port`. Default true. */
  balancer?: boolean
  /** Start the dashboard on `dashboardPort` (default 8761). Default true. */
  dashboard?: boolean
  dashboardPort?: number
  sticky?: boolean
  /** Rolling restart of the instances when a file of the app's directory changes. */
  watch?: boolean
  logFormat?: LogFormat
  /** A configuration directory (application.yml, {app}-{profile}.yml, …) pushed as cluster.config before the instances start. */
  configDir?: string
}

/** How long a (re)started instance may take to answer /health/ready during a rolling restart. */
const READY_TIMEOUT_MS = 60_000
/** When the first warm spare is started. */
const SPARE_AFTER_MS = 5_000
/** Changes closer together than this make one rolling restart. */
const WATCH_SETTLE_MS = 300

const cli = join(dirname(fileURLToPath(import.meta.url)), 'index.js')

/** Something `chorus up` started, stopped in the reverse order of the starts. */
interface Started {
  stop(): Promise<void>
  /** Synchronous last resort when `chorus up` exits without having stopped it. */
  kill(): void
}

class Interrupted extends Error {}

/** Runs the cluster until Ctrl-C, SIGTERM or a process given up; resolves with the exit code. */
export async function up(opts: UpOptions): Promise<number> {
  const app = resolveApp(opts.app)
  const names = Array.from({ length: opts.instances }, (_, i) => `instance-${i + 1}`)
  const out = new Output(opts.logFormat ?? 'pretty', ['chorus', ...names, 'balancer', 'dashboard'])
  const say = out.say.bind(out)
  const layers: Started[][] = []
  const everything = () => layers.flat()
  const onExit = () => everything().forEach((s) => s.kill())
  process.on('exit', onExit)

  // Signals: during the start, remembered and acted on after the step under way; afterwards, a stop.
  let interrupted = false
  let stopping: Promise<number> | null = null
  const finished = defer<number>()
  let signals = 0
  const onSignal = () => {
    if (++signals > 1) {
      say('info', 'second signal: killing every process')
      return everything().forEach((s) => s.kill())
    }
    if (running) void shutdown(0)
    else interrupted = true
  }
  let running = false
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  const step = <T>(value: T): T => {
    if (interrupted) throw new Interrupted()
    return value
  }

  const stopAll = async (): Promise<void> => {
    for (const layer of [...layers].reverse()) await Promise.all(layer.map((s) => s.stop()))
    layers.length = 0
  }
  const shutdown = (code: number): Promise<number> => {
    stopping ??= (async () => {
      watcher?.close()
      say('info', 'stopping')
      await stopAll()
      await rm(UP_FILE, { force: true })
      say('info', 'stopped')
      finished.resolve(code)
      return code
    })()
    return stopping
  }

  let watcher: FSWatcher | null = null
  try {
    let databaseUrl = opts.databaseUrl ?? process.env.DATABASE_URL
    const dataDir = resolve(opts.dataDir ?? join(STATE_DIR, 'postgres'))
    if (databaseUrl) await reachDatabase(databaseUrl)
    const dashboardPort = opts.dashboard === false ? 0 : opts.dashboardPort || ((await portFree(0)) as number)
    await assertPortsFree(portNeeds(opts, dashboardPort, !databaseUrl && !!opts.pgPort && !(await findEmbedded(dataDir))))
    step(null)

    let embedded: EmbeddedPostgres | null = null
    if (!databaseUrl) {
      say('info', `starting the embedded PostgreSQL in ${dataDir}`)
      embedded = await startEmbeddedPostgres({ dataDir, port: opts.pgPort ?? 0 })
      const pg = embedded
      if (pg.owned) layers.push([{ stop: () => announce(say, 'stopping PostgreSQL', pg.stop()), kill: () => void signal(pg.pid, 'SIGINT') }])
      databaseUrl = pg.url
      say('info', pg.owned ? `PostgreSQL ready on 127.0.0.1:${pg.port}` : `reusing the PostgreSQL already running on 127.0.0.1:${pg.port}`)
      step(null)
    }
    await reachDirect(databaseUrl)
    await migrateOnce(databaseUrl, opts.schema, say)
    step(null)

    const secret = process.env.CHORUS_SECRET ?? randomBytes(24).toString('base64url')
    if (opts.configDir) {
      // A refused directory (CHORUS_ERR_CONFIG_…) ends the run in one line before any instance starts.
      const pushed = await pushConfigDirectory({ databaseUrl, schema: opts.schema, secret, dir: resolve(opts.configDir) })
      say('info', pushed.stored ? `configuration version ${pushed.version} pushed from ${opts.configDir} (${pushed.changed.length} keys changed)` : `configuration version ${pushed.version} already matches ${opts.configDir}`)
    }
    const state: UpState = { databaseUrl, schema: opts.schema, secret, pid: process.pid, startedAt: new Date().toISOString(), instances: [] }
    // A warm spare for restarts after a crash, started once the first start has had its CPU.
    const spare = new Spare(process.env)
    layers.push([{ stop: async () => spare.close(), kill: () => spare.close() }])
    spare.fill(SPARE_AFTER_MS)
    const common = { stopTimeoutMs: opts.stopTimeoutMs ?? 30_000, line: out.line.bind(out), say, spare }
    const env = { ...process.env, DATABASE_URL: databaseUrl, CHORUS_SECRET: secret, CHORUS_SCHEMA: opts.schema, CHORUS_LOG_FORMAT: 'json' }
    const giveUp = (what: Supervised) => () => {
      if (opts.watch && what.name.startsWith('instance-')) say('info', `${what.name} starts again on the next change`)
      else void shutdown(1)
    }
    const supervise = (name: string, args: string[], childEnv: NodeJS.ProcessEnv, ready: () => Promise<boolean>): Supervised => {
      const s: Supervised = new Supervised({ ...common, name, args, env: childEnv, ready, onGiveUp: () => giveUp(s)() })
      return s
    }

    const instances = names.map((name, i) => {
      const port = opts.port + i + 1
      state.instances.push({ id: name, port, url: `http://127.0.0.1:${port}` })
      return supervise(
        name,
        [app],
        {
          ...env,
          CHORUS_INSTANCE_ID: name,
          PORT: String(port),
          CHORUS_PRESET: process.env.CHORUS_PRESET ?? 'local',
          CHORUS_ADVERTISE_URL: `http://127.0.0.1:${port}`,
          ...(opts.roles ? { CHORUS_ROLES: opts.roles } : {}),
        },
        () => probeHttp(`http://127.0.0.1:${port}/health/ready`, (s) => (s >= 200 && s < 300) || s === 404),
      )
    })
    startLayer(layers, instances)

    const answers = (port: number) => () => probeHttp(`http://127.0.0.1:${port}/`, (s) => s > 0)
    if (opts.balancer !== false) {
      const args = [cli, 'balancer', '--port', String(opts.port), '--host', '127.0.0.1', '--schema', opts.schema, ...(opts.sticky ? ['--sticky'] : [])]
      const balancer = supervise('balancer', args, env, answers(opts.port))
      startLayer(layers, [balancer])
      state.balancerUrl = `http://127.0.0.1:${opts.port}`
    }
    if (opts.dashboard !== false) {
      const fromEnv = process.env.CHORUS_DASHBOARD_PASSWORD
      const password = fromEnv || generatePassword()
      const dashboard = supervise('dashboard', [cli, 'dashboard', '--port', String(dashboardPort), '--host', '127.0.0.1', '--schema', opts.schema], { ...env, CHORUS_DASHBOARD_PASSWORD: password }, answers(dashboardPort))
      startLayer(layers, [dashboard])
      state.dashboardUrl = `http://127.0.0.1:${dashboardPort}`
      dashboard
        .whenReady(READY_TIMEOUT_MS)
        .then(() => say('info', `dashboard on ${state.dashboardUrl}  password: ${fromEnv ? '(CHORUS_DASHBOARD_PASSWORD)' : password}`))
        .catch(() => undefined)
    }
    await mkdir(STATE_DIR, { recursive: true })
    await writeFile(UP_FILE, JSON.stringify(state, null, 2), { mode: 0o600 })
    say('info', `${opts.instances} instances: ${state.instances.map((s) => s.url).join('  ')}${state.balancerUrl ? `, balancer on ${state.balancerUrl}${opts.sticky ? ' (sticky)' : ''}` : ''}`)
    say('info', '`chorus status` in this directory lists the members; Ctrl-C stops everything')
    step(null)
    running = true
    if (opts.watch) watcher = watchApp(app, opts.app, dataDir, instances, say, () => stopping !== null)
  } catch (err) {
    // Whatever failed, nothing started stays behind.
    await stopAll()
    if (err instanceof Interrupted) {
      say('info', 'stopped')
      return 0
    }
    throw err
  } finally {
    if (!running) {
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
    }
  }
  const code = await finished.promise
  process.off('exit', onExit)
  return code
}

function portNeeds(opts: UpOptions, dashboardPort: number, pgPort: boolean): PortNeed[] {
  const needs: PortNeed[] = []
  if (opts.balancer !== false) needs.push({ port: opts.port, what: 'the balancer', change: 'choose another with --port, or --no-balancer' })
  for (let i = 1; i <= opts.instances; i++) needs.push({ port: opts.port + i, what: `instance-${i}, --port + ${i}`, change: 'choose another base port with --port' })
  if (opts.dashboard !== false) needs.push({ port: dashboardPort, what: 'the dashboard', change: 'choose another with --dashboard-port, or --no-dashboard' })
  if (pgPort) needs.push({ port: opts.pgPort!, what: 'the embedded PostgreSQL', change: 'choose another with --pg-port, or leave it out for a free one' })
  return needs
}

async function migrateOnce(databaseUrl: string, schema: string, say: Output['say']): Promise<void> {
  // Migrations need a session: the direct URL when DATABASE_URL goes through a pooler. Without one,
  // DATABASE_URL must be a session itself: refuse a transaction pooler before writing anything.
  if (!process.env.CHORUS_DIRECT_URL) await assertSession(databaseUrl, 'chorus:up')
  const sql = openSql(process.env.CHORUS_DIRECT_URL || databaseUrl, { appName: 'chorus:up', max: 1 })
  try {
    const result = await migrate(sql, schema, 'chorus-up')
    say('info', result.applied.length ? `migrated schema "${schema}" to version ${result.version}` : `schema "${schema}" is at version ${result.version}`)
  } finally {
    await sql.end({ timeout: 1 })
  }
}

function startLayer(layers: Started[][], procs: Supervised[]): void {
  layers.push(procs.map((p) => ({ stop: () => p.close(), kill: () => p.kill() })))
  for (const p of procs) p.start()
}

async function announce(say: Output['say'], what: string, done: Promise<void>): Promise<void> {
  say('info', what)
  await done
}

/**
 * `--watch`: a change under the app's directory (not node_modules, .git, .chorus or the database's
 * data directory) restarts the instances one at a time — stop (SIGTERM: it drains and leaves),
 * start, wait until /health/ready answers — so the others keep serving through the balancer. A
 * change during a rolling restart makes one more after it; an instance that does not become ready
 * ends the rolling restart there, leaving the others on the code they run.
 */
function watchApp(app: string, given: string, dataDir: string, instances: Supervised[], say: Output['say'], stopping: () => boolean): FSWatcher {
  const root = resolve(given) === app ? dirname(app) : resolve(given)
  const ignored = (file: string) => {
    const full = resolve(root, file)
    return /(^|[\\/])(node_modules|\.git|\.chorus)([\\/]|$)/.test(file) || full === dataDir || full.startsWith(dataDir + sep) || /(~|\.sw.|\.tmp)$/.test(file)
  }
  const rolling = new Rerun(
    async () => {
      for (const instance of instances) {
        if (stopping()) return
        try {
          await instance.restart(READY_TIMEOUT_MS)
          say('info', `${instance.name} restarted (pid ${instance.pid}) and ready`)
        } catch (err) {
          if (!stopping()) say('warn', `${instance.name} did not become ready (${(err as Error).message}); the rolling restart stops here`)
          return
        }
      }
      say('info', 'rolling restart done')
    },
    (err) => say('error', `rolling restart failed: ${(err as Error).message}`),
  )
  let timer: NodeJS.Timeout | null = null
  let changed = ''
  const watcher = watch(root, { recursive: true }, (_event, file) => {
    if (!file || ignored(String(file)) || stopping()) return
    changed = String(file)
    if (timer) clearTimeout(timer)
    timer = setTimeout(() => {
      timer = null
      say('info', `${changed} changed: restarting the instances one at a time`)
      void rolling.run()
    }, WATCH_SETTLE_MS)
  })
  watcher.on('close', () => timer && clearTimeout(timer))
  say('info', `watching ${root} for changes`)
  return watcher
}
