/**
 * The dashboard's picture of the cluster, read from the database without joining it: members with
 * the figures each instance last reported, membership transitions, locks, jobs, cron and
 * singletons. Rates (messages/s, jobs/s) come from the difference between two reports of the same
 * instance and epoch; a short history of the cluster totals feeds the charts. Membership is read
 * again the moment the balancer's watcher sees a change, everything else on a steady tick.
 */
import type { Logger } from 'pino'
import type { MemberWatcher } from '../balancer/watcher.js'
import { reconnectDelayMs } from '../db/backoff.js'
import type { Sql } from '../db/connect.js'
import { schemaName, type SchemaName } from '../db/schema.js'
import { toError } from '../errors.js'
import { jobStatus, type JobStatus } from '../jobs/status.js'
import { lockStatus, type LockStatus } from '../locks/status.js'
import type { InstanceReport } from './report.js'
import { REPORT_INTERVAL_MS } from './reporter.js'

/** `isolated`: alive in the table but not renewing (its lease ran out, or it said so itself). */
export type DisplayStatus = 'up' | 'draining' | 'isolated' | 'down'

export interface InstanceFigures {
  /** How long ago the instance last reported, on database time. */
  readonly reportedAgoMs: number
  readonly uptimeSec: number
  readonly sessions: number
  readonly eventLoopMeanMs: number
  readonly eventLoopP99Ms: number
  readonly rssBytes: number
  readonly heapUsedBytes: number
  readonly cpuPercent: number
  readonly busPublishedPerSec: number
  readonly busDeliveredPerSec: number
  readonly busGaps: number
  readonly realtimePublishedPerSec: number
  readonly realtimeDeliveredPerSec: number
  readonly jobsPerSec: number
  readonly jobsCompleted: number
  readonly jobsFailed: number
  readonly locksHeld: number
  readonly locksWaiting: number
  readonly caches: InstanceReport['caches']
}

export interface InstanceView {
  readonly id: string
  readonly epoch: number
  readonly status: DisplayStatus
  /** `chorus`: a Chorus instance; `eureka`: a service registered through the Eureka API. */
  readonly kind: 'chorus' | 'eureka'
  readonly url: string | null
  readonly roles: readonly string[]
  readonly host: string | null
  readonly pid: number | null
  readonly startedAt: string
  readonly uptimeSec: number
  readonly heartbeatAgeMs: number
  readonly downReason: string | null
  readonly downAt: string | null
  /** The balancer sends requests to it now. */
  readonly inRotation: boolean
  /** Eureka: the application name and the status the service reported (UP, OUT_OF_SERVICE, …). */
  readonly eureka: { readonly app: string; readonly instanceId: string; readonly status: string; readonly leaseSec: number } | null
  readonly figures: InstanceFigures | null
}

export interface MemberEvent {
  readonly id: number
  readonly at: string
  readonly instanceId: string
  readonly epoch: number
  readonly kind: 'joined' | 'rejoined' | 'draining' | 'up' | 'down'
  readonly status: string
  readonly reason: string | null
  readonly eureka: boolean
}

export interface JobFailure {
  readonly id: string
  readonly name: string
  readonly state: string
  readonly attempts: number
  readonly error: string | null
  readonly at: string
}

export interface Series {
  /** Milliseconds since the epoch of each point. */
  readonly t: number[]
  readonly busPublished: number[]
  readonly busDelivered: number[]
  readonly realtimeDelivered: number[]
  readonly jobs: number[]
}

export interface Snapshot {
  readonly at: string
  readonly counts: Readonly<Record<DisplayStatus, number>> & { readonly eureka: number }
  readonly instances: readonly InstanceView[]
  readonly locks: LockStatus | null
  readonly jobs: (JobStatus & { readonly failures: readonly JobFailure[] }) | null
  readonly bus: { readonly publishedPerSec: number; readonly deliveredPerSec: number; readonly gaps: number }
  readonly caches: readonly { readonly instanceId: string; readonly name: string; readonly hits: number; readonly misses: number; readonly size: number; readonly hitRatio: number | null }[]
  readonly realtime: { readonly sessions: number; readonly deliveredPerSec: number; readonly publishedPerSec: number }
  readonly series: Series
}

interface MemberRow {
  instance_id: string
  epoch: string
  status: 'up' | 'draining' | 'down'
  advertise_url: string | null
  roles: string[]
  metadata: Record<string, unknown>
  pid: number | null
  host: string | null
  started_at: Date
  down_at: Date | null
  down_reason: string | null
  age_ms: number
  uptime_ms: number
  expired: boolean
  fail_after_ms: number
  stats_epoch: string | null
  reported_ago_ms: number | null
  reported_ms: number | null
  stats: InstanceReport | null
}

interface Previous {
  /** When the report was written, database time in milliseconds. */
  readonly reportedMs: number
  readonly report: InstanceReport
  rates: Pick<InstanceFigures, 'busPublishedPerSec' | 'busDeliveredPerSec' | 'realtimePublishedPerSec' | 'realtimeDeliveredPerSec' | 'jobsPerSec'>
}

const KEEP_EVENTS = 1000
const SERIES_POINTS = 180
const SERIES_EVERY_MS = REPORT_INTERVAL_MS
const ZERO_RATES = { busPublishedPerSec: 0, busDeliveredPerSec: 0, realtimePublishedPerSec: 0, realtimeDeliveredPerSec: 0, jobsPerSec: 0 }

export class ClusterView {
  readonly #sql: Sql
  readonly #schema: string
  readonly #s: SchemaName
  readonly #watcher: MemberWatcher | null
  readonly #log: Logger
  readonly #tickMs: number
  readonly #previous = new Map<string, Previous>()
  readonly #events: MemberEvent[] = []
  readonly #snapshotListeners = new Set<(s: Snapshot) => void>()
  readonly #eventListeners = new Set<(e: readonly MemberEvent[]) => void>()
  readonly #series: Series = { t: [], busPublished: [], busDelivered: [], realtimeDelivered: [], jobs: [] }
  #lastEventId = 0
  #instances: InstanceView[] = []
  #locks: LockStatus | null = null
  #jobs: Snapshot['jobs'] = null
  #snapshot: Snapshot | null = null
  #heavyAt = 0
  #heavyWanted = false
  #timer: NodeJS.Timeout | null = null
  #running: Promise<void> | null = null
  #again = false
  #offWatcher: (() => void) | null = null
  #lastErrorLog = 0
  /** Reads that failed in a row; the retry backs off on it instead of waiting for the next tick. */
  #failures = 0
  #retryTimer: NodeJS.Timeout | null = null
  #closed = false

  constructor(opts: { sql: Sql; schema: string; watcher: MemberWatcher | null; log: Logger; tickMs?: number }) {
    this.#sql = opts.sql
    this.#schema = opts.schema
    this.#s = schemaName(opts.sql, opts.schema)
    this.#watcher = opts.watcher
    this.#log = opts.log
    this.#tickMs = opts.tickMs ?? 1000
  }

  /** Reads the cluster once (failing loudly if it cannot), then keeps reading. */
  async start(): Promise<void> {
    await this.#read(true)
    this.#offWatcher = this.#watcher?.onChange(() => void this.refresh()) ?? null
    this.#timer = setInterval(() => void this.refresh('tick'), this.#tickMs)
    this.#timer.unref()
  }

  /** The latest snapshot (after `start()`). */
  get snapshot(): Snapshot {
    if (!this.#snapshot) throw new Error('the cluster view has not been read yet')
    return this.#snapshot
  }

  /** The last (up to) 1000 membership transitions, oldest first. */
  get events(): readonly MemberEvent[] {
    return this.#events
  }

  onSnapshot(fn: (s: Snapshot) => void): () => void {
    this.#snapshotListeners.add(fn)
    return () => this.#snapshotListeners.delete(fn)
  }

  /** Called with each batch of new membership transitions. */
  onEvents(fn: (e: readonly MemberEvent[]) => void): () => void {
    this.#eventListeners.add(fn)
    return () => this.#eventListeners.delete(fn)
  }

  /**
   * Reads the database again (coalescing concurrent calls): membership, reports and events each
   * time — what a membership change needs, quickly; on the steady `tick` also locks and jobs, at
   * most every two seconds; `all` reads everything now.
   */
  refresh(what: 'members' | 'tick' | 'all' = 'members'): Promise<void> {
    if (what === 'all') this.#heavyAt = 0
    if (what !== 'members') this.#heavyWanted = true
    if (this.#running) {
      this.#again = true
      return this.#running
    }
    this.#running = (async () => {
      try {
        do {
          this.#again = false
          const heavy = this.#heavyWanted && Date.now() - this.#heavyAt >= REPORT_INTERVAL_MS
          this.#heavyWanted = false
          await this.#read(heavy)
        } while (this.#again)
        this.#failures = 0
      } catch (err) {
        const delay = reconnectDelayMs(this.#failures++)
        if (Date.now() - this.#lastErrorLog > 10_000) {
          this.#lastErrorLog = Date.now()
          this.#log.warn({ err: toError(err), retryInMs: Math.round(delay) }, 'dashboard: could not read the cluster; showing the last view')
        }
        this.#retryAfter(delay)
      } finally {
        this.#running = null
      }
    })()
    return this.#running
  }

  #retryAfter(delayMs: number): void {
    if (this.#closed || this.#retryTimer) return
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null
      void this.refresh('tick')
    }, delayMs)
    this.#retryTimer.unref()
  }

  async #read(heavy: boolean): Promise<void> {
    const sql = this.#sql
    const [rows, events, locks, jobs, failures] = await Promise.all([
      sql<MemberRow[]>`
        select m.instance_id, m.epoch, m.status, m.advertise_url, m.roles, m.metadata, m.pid, m.host, m.started_at,
               m.down_at, m.down_reason, m.fail_after_ms,
               (extract(epoch from now() - m.heartbeat_at) * 1000)::float8 as age_ms,
               (extract(epoch from now() - m.started_at) * 1000)::float8 as uptime_ms,
               m.expires_at < now() as expired,
               s.epoch as stats_epoch,
               (extract(epoch from now() - s.reported_at) * 1000)::float8 as reported_ago_ms,
               (extract(epoch from s.reported_at) * 1000)::float8 as reported_ms,
               s.stats
        from ${this.#s}.members m left join ${this.#s}.instance_stats s on s.instance_id = m.instance_id and s.epoch = m.epoch
        where m.status <> 'down' or m.down_at > now() - interval '10 minutes'
        order by m.instance_id`,
      this.#lastEventId === 0
        ? sql<EventRow[]>`select * from (select id, at, instance_id, epoch, kind, status, reason, eureka from ${this.#s}.member_events order by id desc limit ${KEEP_EVENTS}) x order by id`
        : sql<EventRow[]>`select id, at, instance_id, epoch, kind, status, reason, eureka from ${this.#s}.member_events where id > ${this.#lastEventId} order by id limit ${KEEP_EVENTS}`,
      heavy ? lockStatus(sql as never, { schema: this.#schema, limit: 50 }) : null,
      heavy ? jobStatus(sql, { schema: this.#schema }) : null,
      heavy
        ? sql<{ id: string; name: string; state: string; attempts: number; last_error: string | null; at: Date }[]>`
            select id::text as id, name, state, attempts, last_error, coalesce(finished_at, claimed_at, created_at) as at
            from ${this.#s}.jobs where state = 'failed' or (state = 'queued' and last_error is not null)
            order by id desc limit 50`
        : null,
    ])
    if (heavy) {
      this.#heavyAt = Date.now()
      this.#locks = locks
      this.#jobs = { ...jobs!, failures: failures!.map((f) => ({ id: f.id, name: f.name, state: f.state, attempts: f.attempts, error: f.last_error, at: f.at.toISOString() })) }
    }
    this.#instances = this.#toInstances(rows)
    if (events.length > 0) {
      const fresh = events.map(toEvent)
      this.#lastEventId = fresh.at(-1)!.id
      this.#events.push(...fresh)
      if (this.#events.length > KEEP_EVENTS) this.#events.splice(0, this.#events.length - KEEP_EVENTS)
      for (const fn of this.#eventListeners) fn(fresh)
    }
    this.#snapshot = this.#compose()
    for (const fn of this.#snapshotListeners) fn(this.#snapshot)
  }

  #toInstances(rows: MemberRow[]): InstanceView[] {
    const rotation = new Set((this.#watcher?.members ?? []).filter((m) => m.status === 'up').map((m) => `${m.id}:${m.epoch}`))
    const live = new Set<string>()
    const out = rows.map((r): InstanceView => {
      const epoch = Number(r.epoch)
      const key = `${r.instance_id}:${epoch}`
      const eureka = eurekaOf(r.metadata)
      let figures: InstanceFigures | null = null
      if (r.stats && r.stats.v === 1 && r.status !== 'down' && r.reported_ago_ms !== null && r.reported_ms !== null) {
        live.add(key)
        figures = this.#figures(key, r.stats, r.reported_ms, r.reported_ago_ms)
      }
      const isolated = r.status !== 'down' && (r.expired || (figures !== null && r.stats!.state === 'isolated' && figures.reportedAgoMs < 3 * REPORT_INTERVAL_MS))
      return {
        id: r.instance_id,
        epoch,
        status: isolated ? 'isolated' : r.status,
        kind: eureka ? 'eureka' : 'chorus',
        url: r.advertise_url ?? eureka?.url ?? null,
        roles: r.roles,
        host: r.host,
        pid: r.pid,
        startedAt: r.started_at.toISOString(),
        uptimeSec: figures?.uptimeSec ?? Math.max(0, Math.round(r.uptime_ms / 1000)),
        heartbeatAgeMs: Math.max(0, Math.round(r.age_ms)),
        downReason: r.status === 'down' ? r.down_reason : null,
        downAt: r.down_at ? r.down_at.toISOString() : null,
        inRotation: this.#watcher ? rotation.has(key) : r.status === 'up' && !r.expired && r.advertise_url !== null,
        eureka: eureka ? { app: eureka.app, instanceId: eureka.instanceId, status: eureka.status, leaseSec: Math.round(r.fail_after_ms / 1000) } : null,
        figures,
      }
    })
    for (const key of this.#previous.keys()) if (!live.has(key)) this.#previous.delete(key)
    return out
  }

  /** Figures of one report, with rates against the previous report of the same instance and epoch. */
  #figures(key: string, report: InstanceReport, reportedMs: number, agoMs: number): InstanceFigures {
    const prev = this.#previous.get(key)
    let rates = prev?.rates ?? ZERO_RATES
    const isNew = !prev || reportedMs > prev.reportedMs
    if (prev && isNew) {
      const dt = Math.max(0.2, (reportedMs - prev.reportedMs) / 1000)
      const per = (a: number, b: number) => Math.max(0, Math.round(((a - b) / dt) * 10) / 10)
      const p = prev.report
      rates = {
        busPublishedPerSec: per(report.bus.published, p.bus.published),
        busDeliveredPerSec: per(report.bus.delivered, p.bus.delivered),
        realtimePublishedPerSec: per(report.realtime.published, p.realtime.published),
        realtimeDeliveredPerSec: per(report.realtime.delivered, p.realtime.delivered),
        jobsPerSec: per(report.jobs.completed + report.jobs.failed, p.jobs.completed + p.jobs.failed),
      }
    }
    if (isNew) this.#previous.set(key, { reportedMs, report, rates })
    // A report older than three intervals means the instance stopped reporting: no rates.
    if (agoMs > 3 * REPORT_INTERVAL_MS) rates = ZERO_RATES
    return {
      reportedAgoMs: Math.max(0, Math.round(agoMs)),
      uptimeSec: report.uptimeSec,
      sessions: report.sessions,
      eventLoopMeanMs: report.eventLoop.meanMs,
      eventLoopP99Ms: report.eventLoop.p99Ms,
      rssBytes: report.memory.rssBytes,
      heapUsedBytes: report.memory.heapUsedBytes,
      cpuPercent: report.cpuPercent,
      busGaps: report.bus.gaps,
      jobsCompleted: report.jobs.completed,
      jobsFailed: report.jobs.failed,
      locksHeld: report.locks.held,
      locksWaiting: report.locks.waiting,
      caches: report.caches,
      ...rates,
    }
  }

  #compose(): Snapshot {
    const counts = { up: 0, draining: 0, isolated: 0, down: 0, eureka: 0 }
    const sum = { busPublished: 0, busDelivered: 0, gaps: 0, rtDelivered: 0, rtPublished: 0, sessions: 0, jobs: 0 }
    const caches: Snapshot['caches'][number][] = []
    for (const i of this.#instances) {
      counts[i.status]++
      if (i.kind === 'eureka' && i.status !== 'down') counts.eureka++
      const f = i.figures
      if (!f || i.status === 'down') continue
      sum.busPublished += f.busPublishedPerSec
      sum.busDelivered += f.busDeliveredPerSec
      sum.gaps += f.busGaps
      sum.rtDelivered += f.realtimeDeliveredPerSec
      sum.rtPublished += f.realtimePublishedPerSec
      sum.sessions += f.sessions
      sum.jobs += f.jobsPerSec
      for (const c of f.caches) caches.push({ instanceId: i.id, name: c.name, hits: c.hits, misses: c.misses, size: c.size, hitRatio: c.hits + c.misses === 0 ? null : c.hits / (c.hits + c.misses) })
    }
    const round = (n: number) => Math.round(n * 10) / 10
    const s = this.#series
    const now = Date.now()
    if (s.t.length === 0 || now - s.t.at(-1)! >= SERIES_EVERY_MS - 100) {
      s.t.push(now)
      s.busPublished.push(round(sum.busPublished))
      s.busDelivered.push(round(sum.busDelivered))
      s.realtimeDelivered.push(round(sum.rtDelivered))
      s.jobs.push(round(sum.jobs))
      if (s.t.length > SERIES_POINTS) for (const arr of Object.values(s)) (arr as number[]).shift()
    }
    return {
      at: new Date(now).toISOString(),
      counts,
      instances: this.#instances,
      locks: this.#locks,
      jobs: this.#jobs,
      bus: { publishedPerSec: round(sum.busPublished), deliveredPerSec: round(sum.busDelivered), gaps: sum.gaps },
      caches,
      realtime: { sessions: sum.sessions, deliveredPerSec: round(sum.rtDelivered), publishedPerSec: round(sum.rtPublished) },
      series: { t: [...s.t], busPublished: [...s.busPublished], busDelivered: [...s.busDelivered], realtimeDelivered: [...s.realtimeDelivered], jobs: [...s.jobs] },
    }
  }

  async close(): Promise<void> {
    this.#closed = true
    if (this.#timer) clearInterval(this.#timer)
    if (this.#retryTimer) clearTimeout(this.#retryTimer)
    this.#offWatcher?.()
    this.#snapshotListeners.clear()
    this.#eventListeners.clear()
    await this.#running?.catch(() => undefined)
  }
}

interface EventRow {
  id: string
  at: Date
  instance_id: string
  epoch: string
  kind: MemberEvent['kind']
  status: string
  reason: string | null
  eureka: boolean
}

function toEvent(r: EventRow): MemberEvent {
  return { id: Number(r.id), at: r.at.toISOString(), instanceId: r.instance_id, epoch: Number(r.epoch), kind: r.kind, status: r.status, reason: r.reason, eureka: r.eureka }
}

/** The Eureka part of a member's metadata, when the member was registered through the Eureka API. */
function eurekaOf(metadata: Record<string, unknown>): { app: string; instanceId: string; status: string; url: string | null } | null {
  const e = metadata?.eureka
  if (typeof e !== 'object' || e === null) return null
  const o = e as Record<string, unknown>
  const str = (v: unknown) => (typeof v === 'string' ? v : null)
  const status = str(o.overriddenStatus) && o.overriddenStatus !== 'UNKNOWN' ? str(o.overriddenStatus)! : (str(o.status) ?? 'UNKNOWN')
  return { app: str(o.app) ?? '?', instanceId: str(o.instanceId) ?? '?', status, url: str(o.homePageUrl) }
}
