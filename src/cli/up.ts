/**
 * `chorus up`: one terminal, one command, a whole cluster on this machine. Starts the embedded
 * PostgreSQL (unless a URL is given), migrates once, then N instances of the app as child
 * processes, each with its own `CHORUS_INSTANCE_ID`, `PORT`, `DATABASE_URL` and the shared
 * `CHORUS_SECRET`. Further services (balancer, dashboard) are listed in `services` and start after
 * the instances. Ctrl-C or SIGTERM stops the instances gracefully, then the database.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { assertSession, openSql } from '../db/connect.js'
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../db/embedded.js'
import { migrate } from '../db/migrate.js'
import { ChorusError } from '../errors.js'
import { startBalancer } from './balancer.js'
import { startUpDashboard } from './dashboard.js'
import { reachDatabase, reachDirect, STATE_DIR, UP_FILE, type UpState } from './locate.js'
import { paint, prefixer } from './output.js'

export interface UpOptions {
  instances: number
  app: string
  port: number
  databaseUrl?: string
  dataDir?: string
  pgPort?: number
  schema: string
  roles?: string
  /** Milliseconds to wait for an instance to exit after SIGTERM before SIGKILL. */
  stopTimeoutMs?: number
  /** Start the balancer on `port`. Default true. */
  balancer?: boolean
  /** Start the dashboard on `dashboardPort` (default 8761). Default true. */
  dashboard?: boolean
  dashboardPort?: number
  sticky?: boolean
}

interface Child {
  name: string
  process: ChildProcess
  exited: Promise<void>
}

const runner = join(dirname(fileURLToPath(import.meta.url)), 'runner.js')

export async function up(opts: UpOptions): Promise<void> {
  const app = resolve(opts.app)
  if (!existsSync(app)) throw new ChorusError('CHORUS_ERR_CLI_APP_NOT_FOUND', [app])
  const say = prefixer('chorus', 7, Math.max(6, `instance-${opts.instances}`.length))
  const log = (msg: string) => process.stdout.write(say(msg) + '\n')

  let embedded: EmbeddedPostgres | null = null
  let databaseUrl = opts.databaseUrl ?? process.env.DATABASE_URL
  if (!databaseUrl) {
    const dataDir = resolve(opts.dataDir ?? join(STATE_DIR, 'postgres'))
    log(`starting the embedded PostgreSQL in ${dataDir}`)
    embedded = await startEmbeddedPostgres({ dataDir, port: opts.pgPort ?? 0 })
    databaseUrl = embedded.url
    log(embedded.owned ? `PostgreSQL ready on 127.0.0.1:${embedded.port}` : `reusing the PostgreSQL already running on 127.0.0.1:${embedded.port}`)
  } else await reachDatabase(databaseUrl)
  await reachDirect(databaseUrl)

  // Migrations need a session: the direct URL when DATABASE_URL goes through a pooler. Without one,
  // DATABASE_URL must be a session itself: refuse a transaction pooler before writing anything.
  if (!process.env.CHORUS_DIRECT_URL) await assertSession(databaseUrl, 'chorus:up')
  const sql = openSql(process.env.CHORUS_DIRECT_URL || databaseUrl, { appName: 'chorus:up', max: 1 })
  try {
    const result = await migrate(sql, opts.schema, 'chorus-up')
    log(result.applied.length ? `migrated schema "${opts.schema}" to version ${result.version}` : `schema "${opts.schema}" is at version ${result.version}`)
  } finally {
    await sql.end({ timeout: 1 })
  }

  const secret = process.env.CHORUS_SECRET ?? randomBytes(24).toString('base64url')
  const width = `instance-${opts.instances}`.length
  const children: Child[] = []
  const state: UpState = { databaseUrl, schema: opts.schema, secret, pid: process.pid, startedAt: new Date().toISOString(), instances: [] }
  let stopping = false

  const startInstance = (i: number): Child => {
    const name = `instance-${i}`
    const port = opts.port + i
    const child = spawn(process.execPath, [runner, app], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        CHORUS_INSTANCE_ID: name,
        PORT: String(port),
        DATABASE_URL: databaseUrl,
        CHORUS_SECRET: secret,
        CHORUS_SCHEMA: opts.schema,
        CHORUS_PRESET: process.env.CHORUS_PRESET ?? 'local',
        CHORUS_ADVERTISE_URL: `http://127.0.0.1:${port}`,
        ...(opts.roles ? { CHORUS_ROLES: opts.roles } : {}),
      },
    })
    const prefix = prefixer(name, i - 1, width)
    for (const stream of [child.stdout!, child.stderr!]) {
      createInterface({ input: stream }).on('line', (line) => process.stdout.write(prefix(line) + '\n'))
    }
    const exited = new Promise<void>((done) =>
      child.once('exit', (code, signal) => {
        if (!stopping) log(paint(`${name} exited (${signal ?? `code ${code}`})`, 31))
        done()
      }),
    )
    state.instances.push({ id: name, port, url: `http://127.0.0.1:${port}` })
    return { name, process: child, exited }
  }

  for (let i = 1; i <= opts.instances; i++) children.push(startInstance(i))
  const services: { name: string; close(): Promise<void> }[] = []
  if (opts.balancer !== false) {
    const lb = await startBalancer({ port: opts.port, host: '127.0.0.1', strategy: 'round-robin', sticky: !!opts.sticky, healthPath: '/health/ready', databaseUrl, schema: opts.schema, secret })
    services.push({ name: 'balancer', close: lb.close })
    state.balancerUrl = `http://127.0.0.1:${lb.balancer.port}`
    log(`balancer on ${state.balancerUrl}${opts.sticky ? ' (sticky)' : ''}`)
  }
  if (opts.dashboard !== false) {
    try {
      const { dashboard, password, generated } = await startUpDashboard({ port: opts.dashboardPort ?? 8761, databaseUrl, schema: opts.schema })
      services.push({ name: 'dashboard', close: dashboard.close })
      state.dashboardUrl = dashboard.url
      log(`dashboard on ${dashboard.url}  password: ${generated ? password : '(CHORUS_DASHBOARD_PASSWORD)'}`)
    } catch (err) {
      // The cluster is useful without its dashboard; a taken port must not stop it.
      log(paint(`dashboard not started: ${(err as Error).message}`, 33))
    }
  }
  await mkdir(STATE_DIR, { recursive: true })
  await writeFile(UP_FILE, JSON.stringify(state, null, 2), { mode: 0o600 })
  log(`${opts.instances} instances: ${state.instances.map((s) => s.url).join('  ')}`)
  log('`chorus status` in this directory lists the members; Ctrl-C stops everything')

  await new Promise<void>((done) => {
    let signals = 0
    const stop = async () => {
      signals++
      if (signals > 1) {
        log('second signal: killing the instances')
        for (const c of children) c.process.kill('SIGKILL')
        return
      }
      stopping = true
      for (const svc of services.reverse()) await svc.close().catch(() => undefined)
      log('stopping the instances')
      for (const c of children) if (c.process.exitCode === null && c.process.signalCode === null) c.process.kill('SIGTERM')
      const timeout = setTimeout(() => {
        for (const c of children) if (c.process.exitCode === null && c.process.signalCode === null) c.process.kill('SIGKILL')
      }, opts.stopTimeoutMs ?? 15_000)
      await Promise.all(children.map((c) => c.exited))
      clearTimeout(timeout)
      if (embedded?.owned) {
        log('stopping PostgreSQL')
        await embedded.stop()
      }
      await rm(UP_FILE, { force: true })
      log('stopped')
      done()
    }
    process.on('SIGINT', () => void stop())
    process.on('SIGTERM', () => void stop())
  })
}
