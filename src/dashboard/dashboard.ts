/**
 * `startDashboard`: the dashboard as one object, outside any instance. It applies pending migrations
 * (as instances do, under the same advisory lock), then reads the cluster through its own
 * connections (the balancer's member watcher for membership changes, a bus to send actions and
 * nudges), serves the page, API, metrics and Eureka registry, and closes all of it in reverse.
 */
import type { Logger } from 'pino'
import { MemberWatcher } from '../balancer/watcher.js'
import { Bus } from '../bus/bus.js'
import { PostgresTransport } from '../bus/postgres.js'
import { connect, type Db } from '../db/connect.js'
import { migrate } from '../db/migrate.js'
import { Events } from '../events.js'
import { Queue } from '../jobs/queue.js'
import { createLogger } from '../log.js'
import { ChorusError } from '../errors.js'
import { Access, checkPasswordStrength } from './auth.js'
import { ClusterMetrics } from './cluster-metrics.js'
import { CONTROL_CHANNEL, encodeCommand } from './control.js'
import { DatabaseCredentials } from './credentials.js'
import { EurekaRegistry } from './eureka/registry.js'
import { DashboardServer } from './server.js'
import { Throttle, type ThrottleOptions } from './throttle.js'
import { ClusterView } from './view.js'

export const DEFAULT_DASHBOARD_PORT = 8761

export interface DashboardOptions {
  databaseUrl: string
  schema?: string
  /** At least 8 characters; signs sessions and derives the bearer token. */
  password: string
  /** Default 8761; 0 picks a free port. */
  port?: number
  /** Default 127.0.0.1. */
  host?: string
  log?: Logger
  throttle?: ThrottleOptions
  /** How often the view is read again. Default 1 s. */
  tickMs?: number
  /** Lifetime of a sign-in. Default 12 hours. */
  sessionTtlMs?: number
  /**
   * Default lifetime of an API token (the one printed at start, and `POST /api/tokens` without
   * `ttlSeconds`). Default: env CHORUS_DASHBOARD_TOKEN_TTL_SEC in seconds, else 30 days; at most 365 days.
   */
  tokenTtlMs?: number
}

export interface Dashboard {
  readonly port: number
  readonly url: string
  /** The bearer token for scripts (`Authorization: Bearer <token>`), named `dashboard`; it expires and can be revoked. */
  readonly token: string
  /** When `token` expires. */
  readonly tokenExpiresAt: Date
  readonly view: ClusterView
  close(): Promise<void>
}

export async function startDashboard(opts: DashboardOptions): Promise<Dashboard> {
  checkPasswordStrength(opts.password)
  const tokenTtlMs = opts.tokenTtlMs ?? tokenTtlFromEnv()
  const schema = opts.schema ?? 'chorus'
  const host = opts.host ?? '127.0.0.1'
  const log = opts.log ?? createLogger(process.env.CHORUS_LOG_LEVEL ?? 'info', { instance: 'dashboard' })
  const id = `dashboard-${process.pid}`
  const closers: (() => Promise<void> | void)[] = []
  const close = async () => {
    for (const c of closers.splice(0).reverse()) await Promise.resolve(c()).catch(() => undefined)
  }
  try {
    const db: Db = await connect({ url: opts.databaseUrl, directUrl: process.env.CHORUS_DIRECT_URL || null, schema, instanceId: id, poolSize: 4 })
    closers.push(() => db.close())
    // A dashboard started before any instance (or newer than them) still finds its tables.
    await migrate(db.sql, schema, id)
    const events = new Events(log)
    const bus = new Bus(new PostgresTransport({ db, log, payloadRetentionMs: 60_000 }), { instanceId: id, maxPayloadBytes: 64 * 1024, maxQueueBytes: 1024 * 1024, events, log })
    await bus.start()
    closers.push(() => bus.close())
    // Sessions and tokens are recorded in the database: a sign-out or a revocation holds for every
    // dashboard on it and across restarts.
    const access = new Access(opts.password, {
      store: new DatabaseCredentials({ sql: db.sql, bus, schema }),
      ...(opts.sessionTtlMs !== undefined ? { sessionTtlMs: opts.sessionTtlMs } : {}),
      ...(tokenTtlMs !== undefined ? { tokenTtlMs } : {}),
    })
    const startup = await access.startupToken()
    const watcher = new MemberWatcher({ databaseUrl: opts.databaseUrl, schema, log })
    await watcher.start()
    closers.push(() => watcher.close())
    const view = new ClusterView({ sql: db.sql, schema, watcher, log, ...(opts.tickMs ? { tickMs: opts.tickMs } : {}) })
    await view.start()
    closers.push(() => view.close())
    // Membership changes are announced on this channel; the view reads them at once (the watcher
    // does too, for the balancer's view, one query later).
    closers.push(bus.subscribe('chorus.members', () => void view.refresh()))
    const eureka = new EurekaRegistry({ sql: db.sql, schema, bus, log })
    eureka.start()
    closers.push(() => eureka.close())
    const queue = new Queue({ sql: db.sql, schema, bus, events, log })
    const server = new DashboardServer({
      access,
      throttle: new Throttle(opts.throttle),
      view,
      metrics: new ClusterMetrics(view),
      eureka,
      log,
      actions: {
        async drain(instance) {
          if (instance.eureka) await eureka.setOverride(instance.eureka.app, instance.eureka.instanceId, 'OUT_OF_SERVICE')
          else await bus.publish(CONTROL_CHANNEL, encodeCommand({ op: 'drain', instanceId: instance.id, epoch: instance.epoch }))
        },
        retryJob: (jobId) => queue.retry(jobId),
      },
    })
    const port = await server.listen(opts.port ?? DEFAULT_DASHBOARD_PORT, host)
    closers.push(() => server.close())
    const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`
    log.info({ url }, 'dashboard listening')
    return { port, url, token: startup.token, tokenExpiresAt: new Date(startup.record.expiresAt), view, close }
  } catch (err) {
    await close()
    throw err
  }
}

function tokenTtlFromEnv(): number | undefined {
  const raw = process.env.CHORUS_DASHBOARD_TOKEN_TTL_SEC
  if (raw === undefined || raw === '') return undefined
  const sec = Number(raw)
  if (!Number.isSafeInteger(sec) || sec < 1 || sec > 365 * 24 * 3600) {
    throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', ['CHORUS_DASHBOARD_TOKEN_TTL_SEC', 'must be a whole number of seconds from 1 to 31536000 (365 days)'], { details: { option: 'tokenTtlMs' } })
  }
  return sec * 1000
}
