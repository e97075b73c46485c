/** `chorus balancer`: the built-in reverse proxy in front of the live members. */
import { Balancer, type Strategy } from '../balancer/balancer.js'
import { MemberWatcher } from '../balancer/watcher.js'
import { createLogger } from '../log.js'
import { locateDatabase } from './locate.js'
import { EXIT } from './report.js'

export interface BalancerCommandOptions {
  port: number
  host: string
  databaseUrl?: string
  schema?: string
  strategy: Strategy
  sticky?: boolean
  healthPath: string
  secret?: string
  /** Proxies in front of the balancer whose forwarding headers are believed (addresses or CIDRs). */
  trustProxy?: string[]
}

export async function startBalancer(opts: BalancerCommandOptions & { databaseUrl: string; schema: string; secret: string }): Promise<{ balancer: Balancer; close(): Promise<void> }> {
  const log = createLogger(process.env.CHORUS_LOG_LEVEL ?? 'info', { instance: 'balancer' })
  const watcher = new MemberWatcher({ databaseUrl: opts.databaseUrl, schema: opts.schema, log })
  await watcher.start()
  const balancer = new Balancer(watcher, log, {
    port: opts.port,
    host: opts.host,
    strategy: opts.strategy,
    sticky: !!opts.sticky,
    secret: opts.secret,
    healthPath: opts.healthPath,
    trustProxy: opts.trustProxy ?? [],
  })
  await balancer.start()
  return {
    balancer,
    async close() {
      await balancer.close()
      await watcher.close()
    },
  }
}

export async function balancerCommand(opts: BalancerCommandOptions): Promise<void> {
  const found = await locateDatabase(opts.databaseUrl)
  const secret = opts.secret ?? process.env.CHORUS_SECRET ?? found.secret
  if (opts.sticky && !secret) {
    process.stderr.write('chorus balancer: --sticky needs the cluster secret (CHORUS_SECRET) to sign the affinity cookie\n')
    process.exit(EXIT.usage)
  }
  const { balancer, close } = await startBalancer({ ...opts, databaseUrl: found.url, schema: opts.schema ?? found.schema ?? 'chorus', secret: secret ?? 'unused-without-sticky-0000' })
  process.stdout.write(`balancer on http://${opts.host}:${balancer.port} (${opts.strategy}${opts.sticky ? ', sticky' : ''})\n`)
  await new Promise<void>((resolve) => {
    const stop = () => void close().then(resolve)
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
}
