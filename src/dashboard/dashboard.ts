/**
 * `startDashboard`: the dashboard as one object, outside any instance. Its process builds ONE
 * foundation at the assembly point — one work pool, one LISTEN connection, pending migrations
 * applied first (as instances do, under the same advisory lock) — and everything shares it:
 * membership's reader, the view, the Eureka registry, credentials and the job queue. It serves the
 * page, API, metrics and Eureka registry, and closes all of it in reverse.
 */
import { assemble } from '../assembly.js'
import { channels } from '../bus/channels.js'
import { ChorusError } from '../errors.js'
import { Events } from '../events.js'
import { Queue } from '../jobs/queue.js'
import { createLogger } from '../log.js'
import { MembershipReader } from '../membership/reader.js'
import { Access, checkPasswordStrength } from './auth.js'
import { ClusterMetrics } from './cluster-metrics.js'
import { configRoutes } from './config-routes.js'
import { encodeCommand } from './control.js'
import { DatabaseCredentials } from './credentials.js'
import { accessGuard } from './guard.js'
import { EurekaRegistry } from './eureka/registry.js'
import { parseDashboardOptions, type DashboardOptions } from './options.js'
import { DashboardServer } from './server.js'
import { Throttle } from './throttle.js'
import { ClusterView } from './view.js'

export type { DashboardOptions } from './options.js'

export const DEFAULT_DASHBOARD_PORT = 8761

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

/** Refuses bad options with `CHORUS_ERR_OPTIONS_INVALID` naming the option. */
export async function startDashboard(input: DashboardOptions): Promise<Dashboard> {
  const opts = parseDashboardOptions(input)
  checkPasswordStrength(opts.password)
  const tokenTtlMs = opts.tokenTtlMs ?? tokenTtlFromEnv()
  const schema = opts.schema ?? 'chorus'
  const host = opts.host ?? '127.0.0.1'
  const log = opts.log ?? createLogger(process.env.CHORUS_LOG_LEVEL ?? 'info', { instance: 'dashboard' })
  const closers: (() => Promise<void> | void)[] = []
  const close = async () => {
    for (const c of closers.splice(0).reverse()) await Promise.resolve(c()).catch(() => undefined)
  }
  try {
    const events = new Events(log)
    // A dashboard started before any instance (or newer than them) still finds its tables.
    const foundation = await assemble({
      instanceId: `dashboard-${process.pid}`,
      databaseUrl: opts.databaseUrl,
      directUrl: process.env.CHORUS_DIRECT_URL || null,
      schema,
      poolSize: opts.poolSize ?? 4,
      migrate: true,
      log,
      events,
    })
    closers.push(() => foundation.close())
    const { db, bus } = foundation
    // Sessions and tokens are recorded in the database: a sign-out or a revocation holds for every
    // dashboard on it and across restarts.
    const access = new Access(opts.password, {
      store: new DatabaseCredentials({ sql: db.sql, bus, schema }),
      ...(opts.sessionTtlMs !== undefined ? { sessionTtlMs: opts.sessionTtlMs } : {}),
      ...(tokenTtlMs !== undefined ? { tokenTtlMs } : {}),
    })
    const startup = await access.startupToken()
    const reader = new MembershipReader({ sql: db.sql, schema, bus, events, log })
    await reader.start()
    closers.push(() => reader.close())
    const view = new ClusterView({ sql: db.sql, schema, reader, log, ...(opts.tickMs ? { tickMs: opts.tickMs } : {}) })
    await view.start()
    closers.push(() => view.close())
    const eureka = new EurekaRegistry({ sql: db.sql, schema, bus, log })
    eureka.start()
    closers.push(() => eureka.close())
    const queue = new Queue({ sql: db.sql, schema, bus, events, log })
    // One throttle for every credential check: a wrong password on the config endpoint counts as on any other route.
    const throttle = new Throttle(opts.throttle)
    const config = configRoutes({ sql: db.sql, schema, log, guard: accessGuard(access, throttle), bus, secret: process.env.CHORUS_SECRET || null })
    const server = new DashboardServer({
      access,
      throttle,
      config,
      view,
      metrics: new ClusterMetrics(view),
      eureka,
      log: log.child({ subsystem: 'dashboard' }),
      actions: {
        async drain(instance) {
          if (instance.eureka) await eureka.setOverride(instance.eureka.app, instance.eureka.instanceId, 'OUT_OF_SERVICE')
          else await bus.publish(channels.dashboardControl, encodeCommand({ op: 'drain', instanceId: instance.id, epoch: instance.epoch }))
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
