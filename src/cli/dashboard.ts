/** `chorus dashboard`: the cluster's web dashboard, JSON API, metrics and Eureka registry on one port. */
import { startDashboard } from '../dashboard/dashboard.js'
import { ChorusError } from '../errors.js'
import { locateDatabase } from './locate.js'

export interface DashboardCommandOptions {
  port: number
  host: string
  databaseUrl?: string
  schema?: string
  password?: string
}

export async function dashboardCommand(opts: DashboardCommandOptions): Promise<void> {
  const password = opts.password ?? process.env.CHORUS_DASHBOARD_PASSWORD
  if (!password) throw new ChorusError('CHORUS_ERR_DASHBOARD_PASSWORD_MISSING')
  const found = await locateDatabase(opts.databaseUrl)
  // The cluster secret decrypts secrets for the Config panel's rollbacks and the Spring endpoint.
  if (!process.env.CHORUS_SECRET && found.secret) process.env.CHORUS_SECRET = found.secret
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
