/**
 * `createCluster`: resolves the options, builds the foundation (connections, migrations, bus) at
 * the assembly point, joins, then wires the subsystems in dependency order. A failure at any step
 * undoes the steps before it, so no half-started instance stays a member or holds a connection.
 */
import { assemble, type Foundation } from './assembly.js'
import { Cluster } from './cluster.js'
import { Config } from './config/config.js'
import { Metrics } from './dashboard/metrics.js'
import type { ReportSources } from './dashboard/report.js'
import { Reporter } from './dashboard/reporter.js'
import { ChorusError, toError } from './errors.js'
import { Events } from './events.js'
import { Files } from './files/files.js'
import { Jobs } from './jobs/jobs.js'
import { Singletons } from './jobs/singleton.js'
import { Locks } from './locks/locks.js'
import { createLogger } from './log.js'
import { Membership } from './membership/membership.js'
import { resolveOptions, type ClusterOptions } from './options.js'
import { Realtime } from './realtime/gateway.js'
import { Rpc } from './rpc/rpc.js'
import { scheduleStateSweep } from './sweep.js'

export async function createCluster(input: ClusterOptions = {}): Promise<Cluster> {
  const options = resolveOptions(input)
  const log = options.logger ?? createLogger(options.logLevel, { instance: options.instanceId })
  const events = new Events(log)
  let foundation: Foundation | null = null
  try {
    foundation = await assemble({
      instanceId: options.instanceId,
      databaseUrl: options.databaseUrl,
      directUrl: options.directUrl,
      schema: options.schema,
      poolSize: options.poolSize,
      migrate: options.migrate,
      embedded: options.embedded,
      bus: options.bus,
      transport: options.transport,
      log,
      events,
    })
    const { db, bus, embedded } = foundation
    const members = new Membership({ db, bus, events, log, options })
    const cluster = new Cluster({ options, log, events, db, bus, members, embedded })
    try {
      await members.join()
    } catch (err) {
      await members.leave().catch(() => undefined)
      throw err
    }
    try {
      await wireSubsystems(cluster)
    } catch (err) {
      // Stop what did start and leave, so no half-wired instance stays a member.
      foundation = null
      await cluster.close().catch(() => undefined)
      throw err
    }
    cluster.setState('up')
    return cluster
  } catch (err) {
    await foundation?.close().catch(() => undefined)
    if (err instanceof ChorusError) throw err
    throw new ChorusError('CHORUS_ERR_CLUSTER_START_FAILED', [toError(err).message], { cause: err })
  }
}

/** Subsystems in dependency order; each is constructed from `cluster.deps`. */
async function wireSubsystems(cluster: Cluster): Promise<void> {
  // First: every other subsystem may read the configuration, and a stored version this instance's
  // schema refuses stops the start here.
  await cluster.addSubsystem(new Config(cluster.deps, cluster.options.config), 'config')
  const locks = await cluster.addSubsystem(new Locks(cluster.deps), 'locks')
  const jobs = await cluster.addSubsystem(new Jobs(cluster.deps), 'jobs')
  scheduleStateSweep(jobs, cluster.db.sql, cluster.db.schema)
  await cluster.addSubsystem(new Singletons(cluster.deps), 'singletons')
  await cluster.addSubsystem(new Realtime(cluster.deps), 'realtime')
  await cluster.addSubsystem(new Files(cluster.deps, locks), 'files')
  await cluster.addSubsystem(new Rpc(cluster.deps), 'rpc')
  const observed: ReportSources = {
    realtime: () => cluster.wired('realtime'),
    caches: () => [...cluster.nearCaches()].map(([name, cache]) => [name, cache.stats] as const),
    locks: () => ({ held: locks.held().length, waiting: locks.waiting }),
    drain: () => cluster.drain(),
  }
  await cluster.addSubsystem(new Metrics(cluster.deps, observed), 'metrics')
  await cluster.addSubsystem(new Reporter(cluster.deps, observed))
}
