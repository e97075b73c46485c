/**
 * Prometheus metrics of one instance (prom-client): membership, bus, locks, jobs, cron, singletons,
 * near caches, realtime and HTTP, plus Node's process metrics. One registry per cluster, so several
 * clusters in one process never mix their figures. Counts the subsystems keep themselves are
 * mirrored into counters when scraped; the rest are counted from the cluster's events.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { performance } from 'node:perf_hooks'
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import { toError } from '../errors.js'
import type { Subsystem, SubsystemDeps } from '../subsystem.js'
import type { ReportSources } from './report.js'

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])

/**
 * Node's process metrics, once per process: they describe the process, not a cluster, and
 * prom-client's collectors (an event-loop histogram, a GC observer) cannot be stopped, so a
 * process that creates many clusters (tests) must not add a set per cluster.
 */
let processRegistry: Registry | null = null
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry()
    collectDefaultMetrics({ register: processRegistry })
  }
  return processRegistry
}

export class Metrics implements Subsystem {
  readonly name = 'metrics'
  /** The prom-client registry of this cluster; register your own metrics on it to have them served together. */
  readonly registry = new Registry()
  readonly #deps: SubsystemDeps
  readonly #offs: (() => void)[] = []
  readonly #seen = new Map<string, number>()
  readonly #http: { requests: Counter<'method' | 'code'>; duration: Histogram<'method' | 'code'> }

  constructor(deps: SubsystemDeps, sources: ReportSources) {
    this.#deps = deps
    const registers = [this.registry]
    const ev = deps.events

    // ---- membership
    new Gauge({
      name: 'chorus_member_info', help: 'This instance: always 1, with its id, epoch and state as labels', labelNames: ['instance_id', 'epoch', 'state'] as const, registers,
      collect() {
        this.reset()
        const self = deps.members.self
        this.set({ instance_id: self.instanceId, epoch: String(self.epoch), state: self.state }, 1)
      },
    })
    new Gauge({
      name: 'chorus_members', help: 'Members in this instance\'s view, by status (down: the last ten minutes)', labelNames: ['status'] as const, registers,
      collect() {
        const n = { up: 0, draining: 0, down: 0 }
        for (const m of deps.members.all()) n[m.status]++
        for (const [status, v] of Object.entries(n)) this.set({ status }, v)
      },
    })
    const memberEvents = new Counter({ name: 'chorus_member_events_total', help: 'Membership changes this instance saw, by kind', labelNames: ['kind'] as const, registers })
    const isolations = new Counter({ name: 'chorus_membership_isolations_total', help: 'Times this instance could not renew in time and isolated itself', registers })
    this.#offs.push(
      ev.on('member:up', () => memberEvents.inc({ kind: 'up' })),
      ev.on('member:draining', () => memberEvents.inc({ kind: 'draining' })),
      ev.on('member:down', (e) => memberEvents.inc({ kind: `down-${e.reason}` })),
      ev.on('member:self:isolated', () => isolations.inc()),
    )

    // ---- bus
    const bus = deps.bus
    this.#mirror('chorus_bus_messages_published_total', 'Bus messages this instance published', () => [[{}, bus.stats.published]])
    this.#mirror('chorus_bus_messages_delivered_total', 'Bus messages delivered to subscribers on this instance', () => [[{}, bus.stats.delivered]])
    this.#mirror('chorus_bus_gaps_total', 'Times this instance may have missed bus messages (reconnect, sequence gap)', () => [[{}, bus.stats.gaps]])
    this.#mirror('chorus_bus_publish_failures_total', 'Bus publishes that were refused or could not be sent', () => [[{}, bus.stats.failed]])
    this.#mirror('chorus_bus_reconnects_total', 'Reconnects of the bus transport', () => [[{}, bus.stats.reconnects]])

    // ---- locks
    const lockAcquired = new Counter({ name: 'chorus_locks_acquired_total', help: 'Locks acquired on this instance', labelNames: ['mode'] as const, registers })
    const lockReleased = new Counter({ name: 'chorus_locks_released_total', help: 'Locks released on this instance', labelNames: ['mode'] as const, registers })
    const lockLost = new Counter({ name: 'chorus_locks_lost_total', help: 'Locks that stopped being safe before release', labelNames: ['reason'] as const, registers })
    const lockWait = new Histogram({ name: 'chorus_lock_wait_seconds', help: 'Time from asking for a lock to holding it', buckets: [0.001, 0.005, 0.02, 0.1, 0.5, 2, 10, 60], registers })
    const reaped = new Counter({ name: 'chorus_locks_reaped_total', help: 'Leases of dead members this instance removed', registers })
    new Gauge({
      name: 'chorus_locks_held', help: 'Locks held by this instance now', registers,
      collect() {
        this.set(sources.locks()?.held ?? 0)
      },
    })
    new Gauge({
      name: 'chorus_locks_waiting', help: 'Lock requests waiting on this instance now', registers,
      collect() {
        this.set(sources.locks()?.waiting ?? 0)
      },
    })
    this.#offs.push(
      ev.on('lock:acquired', (e) => {
        lockAcquired.inc({ mode: e.mode })
        lockWait.observe(e.waitedMs / 1000)
      }),
      ev.on('lock:released', (e) => lockReleased.inc({ mode: e.mode })),
      ev.on('lock:lost', (e) => lockLost.inc({ reason: e.reason })),
      ev.on('lock:reaped', (e) => reaped.inc(e.leases)),
    )

    // ---- jobs, cron, singletons
    const enqueued = new Counter({ name: 'chorus_jobs_enqueued_total', help: 'Jobs enqueued from this instance', labelNames: ['name'] as const, registers })
    const started = new Counter({ name: 'chorus_jobs_started_total', help: 'Job attempts started on this instance', labelNames: ['name'] as const, registers })
    const completed = new Counter({ name: 'chorus_jobs_completed_total', help: 'Jobs completed on this instance', labelNames: ['name'] as const, registers })
    const failed = new Counter({ name: 'chorus_jobs_failed_total', help: 'Job attempts that failed on this instance (final: no retry left)', labelNames: ['name', 'final'] as const, registers })
    const requeued = new Counter({ name: 'chorus_jobs_requeued_total', help: 'Jobs handed back to the queue, by reason', labelNames: ['reason'] as const, registers })
    const duration = new Histogram({ name: 'chorus_job_duration_seconds', help: 'Run time of completed jobs', labelNames: ['name'] as const, buckets: [0.005, 0.025, 0.1, 0.5, 2, 10, 60, 300], registers })
    const running = new Gauge({ name: 'chorus_jobs_running', help: 'Job attempts running on this instance now', registers })
    const cronTicks = new Counter({ name: 'chorus_cron_ticks_total', help: 'Cron ticks this instance claimed', labelNames: ['name'] as const, registers })
    const cronMissed = new Counter({ name: 'chorus_cron_missed_total', help: 'Cron ticks that passed unclaimed, as seen here', labelNames: ['name'] as const, registers })
    const singletons = new Gauge({ name: 'chorus_singletons_held', help: 'Singletons running on this instance now', registers })
    const heldSingletons = new Set<string>()
    this.#offs.push(
      ev.on('job:enqueued', (e) => void (e.deduplicated || enqueued.inc({ name: e.name }))),
      ev.on('job:started', (e) => {
        started.inc({ name: e.name })
        running.inc()
      }),
      ev.on('job:completed', (e) => {
        completed.inc({ name: e.name })
        duration.observe({ name: e.name }, e.durationMs / 1000)
        running.dec()
      }),
      ev.on('job:failed', (e) => {
        failed.inc({ name: e.name, final: String(e.retryInMs === null) })
        running.dec()
      }),
      ev.on('job:claim:lost', () => running.dec()),
      ev.on('job:requeued', (e) => requeued.inc({ reason: e.reason }, e.ids.length)),
      ev.on('cron:tick:enqueued', (e) => cronTicks.inc({ name: e.name })),
      ev.on('cron:tick:missed', (e) => cronMissed.inc({ name: e.name })),
      ev.on('singleton:acquired', (e) => {
        heldSingletons.add(e.name)
        singletons.set(heldSingletons.size)
      }),
      ev.on('singleton:stopped', (e) => {
        heldSingletons.delete(e.name)
        singletons.set(heldSingletons.size)
      }),
    )

    // ---- near caches
    const caches = () => [...sources.caches()]
    this.#mirror('chorus_cache_hits_total', 'Near-cache hits', () => caches().map(([cache, s]) => [{ cache }, s.hits]), ['cache'])
    this.#mirror('chorus_cache_misses_total', 'Near-cache misses', () => caches().map(([cache, s]) => [{ cache }, s.misses]), ['cache'])
    this.#mirror('chorus_cache_loads_total', 'Near-cache loads (getOrLoad)', () => caches().map(([cache, s]) => [{ cache }, s.loads]), ['cache'])
    this.#mirror('chorus_cache_invalidations_total', 'Invalidations received from the bus', () => caches().map(([cache, s]) => [{ cache }, s.invalidations]), ['cache'])
    this.#mirror('chorus_cache_flushes_total', 'Whole-cache flushes after a possible lost invalidation', () => caches().map(([cache, s]) => [{ cache }, s.flushes]), ['cache'])
    new Gauge({
      name: 'chorus_cache_entries', help: 'Entries in each near cache', labelNames: ['cache'] as const, registers,
      collect() {
        for (const [cache, s] of caches()) this.set({ cache }, s.size)
      },
    })

    // ---- realtime
    const rt = () => sources.realtime()
    new Gauge({
      name: 'chorus_realtime_sessions', help: 'STOMP sessions connected to this instance', registers,
      collect() {
        this.set(rt()?.localSessions ?? 0)
      },
    })
    this.#mirror('chorus_realtime_messages_published_total', 'Realtime messages published from this instance', () => [[{}, rt()?.stats.published ?? 0]])
    this.#mirror('chorus_realtime_messages_delivered_total', 'Realtime messages delivered to sessions on this instance', () => [[{}, rt()?.stats.delivered ?? 0]])
    this.#mirror('chorus_realtime_connections_total', 'STOMP sessions accepted by this instance', () => [[{}, rt()?.stats.connections ?? 0]])
    this.#mirror('chorus_realtime_gaps_total', 'Times sessions here were told they may have missed messages', () => [[{}, rt()?.stats.gaps ?? 0]])

    // ---- HTTP
    this.#http = {
      requests: new Counter({ name: 'chorus_http_requests_total', help: 'HTTP requests answered by instrumented servers', labelNames: ['method', 'code'] as const, registers }),
      duration: new Histogram({
        name: 'chorus_http_request_duration_seconds', help: 'Time to answer HTTP requests', labelNames: ['method', 'code'] as const,
        buckets: [0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10], registers,
      }),
    }
  }

  /** Content type of `text()` (the Prometheus text exposition format). */
  get contentType(): string {
    return this.registry.contentType
  }

  /** Every metric of this instance (and Node's process metrics) in the Prometheus text format. */
  text(): Promise<string> {
    return Registry.merge([processMetrics(), this.registry]).metrics()
  }

  /**
   * An HTTP handler for the metrics endpoint: `GET /metrics` answers the text format. Mount it where
   * Prometheus scrapes (`if (req.url === '/metrics') return cluster.metrics.handler(req, res)`); it
   * works as an Express or Node handler. Protect it as the rest of the app if it is exposed.
   */
  readonly handler = (req: IncomingMessage, res: ServerResponse): void => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n')
      return
    }
    this.text().then(
      (body) => {
        res.writeHead(200, { 'content-type': this.contentType, 'cache-control': 'no-store' })
        res.end(req.method === 'HEAD' ? undefined : body)
      },
      (err: unknown) => {
        this.#deps.log.warn({ err: toError(err) }, 'metrics: collecting failed')
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' })
        res.end('metrics unavailable\n')
      },
    )
  }

  /**
   * Counts the requests `server` answers (by method and status code) and their durations.
   * Returns a function that stops counting.
   */
  instrument(server: Server): () => void {
    const onRequest = (req: IncomingMessage, res: ServerResponse) => {
      const started = performance.now()
      res.once('finish', () => {
        const labels = { method: METHODS.has(req.method ?? '') ? req.method! : 'other', code: String(res.statusCode) }
        this.#http.requests.inc(labels)
        this.#http.duration.observe(labels, (performance.now() - started) / 1000)
      })
    }
    server.on('request', onRequest)
    const off = () => void server.off('request', onRequest)
    this.#offs.push(off)
    return off
  }

  /** A counter that mirrors cumulative values kept elsewhere, read when scraped. */
  #mirror(name: string, help: string, read: () => [Record<string, string>, number][], labelNames: string[] = []): void {
    const seen = this.#seen
    new Counter({
      name, help, labelNames, registers: [this.registry],
      collect() {
        for (const [labels, value] of read()) {
          const key = `${name}${JSON.stringify(labels)}`
          const last = seen.get(key) ?? 0
          if (value > last) this.inc(labels, value - last)
          seen.set(key, value)
        }
      },
    })
  }

  async close(): Promise<void> {
    for (const off of this.#offs.splice(0)) off()
  }
}
