/** `chorus dashboard`: the cluster's web dashboard, JSON API, metrics and Eureka registry on one port. */
import type { Logger } from 'pino'
import { generatePassword } from '../dashboard/auth.js'
import { startDashboard, type Dashboard } from '../dashboard/dashboard.js'
import { ChorusError } from '../errors.js'
import { createLogger } from '../log.js'
import { locateDatabase } from './locate.js'

export interface DashboardCommandOptions {
  port: number
  host: string
  databaseUrl?: string
  schema?: string
  password?: string
}

/**
 * Starts the dashboard for `chorus up`: the password comes from CHORUS_DASHBOARD_PASSWORD, else one
 * is generated (`generated: true`) for the caller to print.
 */
export async function startUpDashboard(opts: { port: number; databaseUrl: string; schema: string; log?: Logger }): Promise<{ dashboard: Dashboard; password: string; generated: boolean }> {
  const fromEnv = process.env.CHORUS_DASHBOARD_PASSWORD
  const password = fromEnv || generatePassword()
  const log = opts.log ?? createLogger(process.env.CHORUS_LOG_LEVEL ?? 'info', { instance: 'dashboard' })
  const dashboard = await startDashboard({ databaseUrl: opts.databaseUrl, schema: opts.schema, password, port: opts.port, log })
  return { dashboard, password, generated: !fromEnv }
}

export async function dashboardCommand(opts: DashboardCommandOptions): Promise<void> {
  const password = opts.password ?? process.env.CHORUS_DASHBOARD_PASSWORD
  if (!password) throw new ChorusError('CHORUS_ERR_DASHBOARD_PASSWORD_MISSING')
  const found = await locateDatabase(opts.databaseUrl)
  const dashboard = await startDashboard({
    databaseUrl: found.url,
    schema: opts.schema ?? found.schema ?? process.env.CHORUS_SCHEMA ?? 'chorus',
    password,
    port: opts.port,
    host: opts.host,
  })
  process.stdout.write(`dashboard on ${dashboard.url}\n`)
  process.stdout.write(`API token (Authorization: Bearer …): ${dashboard.token}\n`)
  process.stdout.write(`Eureka clients: http://admin:<password>@${dashboard.url.replace(/^http:\/\//, '')}/eureka/\n`)
  await new Promise<void>((resolve) => {
    const stop = () => void dashboard.close().then(resolve)
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
}
