/**
 * The dashboard's picture of the cluster, without joining it: the members as membership's reader
 * sees them, with the figures each instance last reported, membership transitions, locks, jobs,
 * cron and singletons. Rates (messages/s, jobs/s) come from the difference between two reports of
 * the same instance and epoch; a short history of the cluster totals feeds the charts. The view is
 * composed again the moment the reader sees a membership change, everything else on a steady tick.
 */
import type { Logger } from 'pino'
import { reconnectDelayMs } from '../db/backoff.js'
import type { Sql } from '../db/connect.js'
import { schemaName, type SchemaName } from '../db/schema.js'
import { toError } from '../errors.js'
import { jobStatus } from '../jobs/status.js'
import { lockStatus, type LockStatus } from '../locks/status.js'
import { routable, type MembershipReader, type WatchedMember } from '../membership/reader.js'
import type { InstanceReport } from './report.js'
import { REPORT_INTERVAL_MS } from './reporter.js'
import { eurekaOf, toEvent, type EventRow, type InstanceFigures, type InstanceView, type MemberEvent, type Series, type Snapshot } from './snapshot.js'

export type { DisplayStatus, InstanceFigures, InstanceView, JobFailure, MemberEvent, Series, Snapshot } from './snapshot.js'

interface StatsRow {
  instance_id: string
  epoch: string
  reported_ago_ms: number
  reported_ms: number
  stats: InstanceReport
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
  readonly #reader: MembershipReader
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
  #offReader: (() => void) | null = null
  #lastErrorLog = 0
  /** Reads that failed in a row; the retry backs off on it instead of waiting for the next tick. */
  #failures = 0
  #retryTimer: NodeJS.Timeout | null = null
  #closed = false

  constructor(opts: { sql: Sql; schema: string; reader: MembershipReader; log: Logger; tickMs?: number }) {
    this.#sql = opts.sql
    this.#schema = opts.schema
    this.#s = schemaName(opts.sql, opts.schema)
    this.#reader = opts.reader
    this.#log = opts.log.child({ subsystem: 'dashboard-view' })
    this.#tickMs = opts.tickMs ?? 1000
  }

  /** Reads the cluster once (failing loudly if it cannot), then keeps reading. */
  async start(): Promise<void> {
    await this.#read(true)
    // The reader has just read: compose again without asking it to read once more.
    this.#offReader = this.#reader.onChange(() => void this.#recompose('members'))
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
   * Reads the database again (coalescing concurrent calls): membership (through the reader),
   * reports and events each time — what a membership change needs, quickly; on the steady `tick`
   * also locks and jobs, at most every two seconds; `all` reads everything now.
   */
  async refresh(what: 'members' | 'tick' | 'all' = 'members'): Promise<void> {
    if (what !== 'tick') await this.#reader.refresh()
    return this.#recompose(what)
  }

  #recompose(what: 'members' | 'tick' | 'all'): Promise<void> {
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
          this.#log.warn({ err: toError(err), retryInMs: Math.round(delay) }, 'could not read the cluster; showing the last view')
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
    const members = this.#reader.members
    const reporting = members.filter((m) => m.status !== 'down').map((m) => m.instanceId)
    const [stats, events, locks, jobs, failures] = await Promise.all([
      sql<StatsRow[]>`
        select instance_id, epoch, stats,
               (extract(epoch from now() - reported_at) * 1000)::float8 as reported_ago_ms,
               (extract(epoch from reported_at) * 1000)::float8 as reported_ms
        from ${this.#s}.instance_stats where instance_id = any(${reporting}::text[])`,
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
    this.#instances = this.#toInstances(members, stats)
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

  #toInstances(members: readonly WatchedMember[], stats: readonly StatsRow[]): InstanceView[] {
    const rotation = new Set(routable(members).filter((m) => m.status === 'up').map((m) => `${m.instanceId}:${m.epoch}`))
    const reports = new Map(stats.map((r) => [`${r.instance_id}:${Number(r.epoch)}`, r]))
    const live = new Set<string>()
    const out = members.map((m): InstanceView => {
      const key = `${m.instanceId}:${m.epoch}`
      const eureka = eurekaOf(m.metadata as Record<string, unknown>)
      const r = m.status === 'down' ? undefined : reports.get(key)
      let figures: InstanceFigures | null = null
      if (r && r.stats && r.stats.v === 1) {
        live.add(key)
        figures = this.#figures(key, r.stats, r.reported_ms, r.reported_ago_ms)
      }
      const isolated = m.status !== 'down' && (m.expired || (figures !== null && r!.stats.state === 'isolated' && figures.reportedAgoMs < 3 * REPORT_INTERVAL_MS))
      return {
        id: m.instanceId,
        epoch: m.epoch,
        status: isolated ? 'isolated' : m.status,
        kind: m.kind,
        url: m.advertiseUrl ?? eureka?.url ?? null,
        roles: m.roles,
        host: m.host,
        pid: m.pid,
        startedAt: m.startedAt.toISOString(),
        uptimeSec: figures?.uptimeSec ?? Math.max(0, Math.round(m.uptimeMs / 1000)),
        heartbeatAgeMs: m.heartbeatAgeMs,
        downReason: m.status === 'down' ? m.downReason : null,
        downAt: m.downAt ? m.downAt.toISOString() : null,
        inRotation: rotation.has(key),
        eureka: eureka ? { app: eureka.app, instanceId: eureka.instanceId, status: eureka.status, leaseSec: Math.round(m.failAfterMs / 1000) } : null,
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
    this.#offReader?.()
    this.#snapshotListeners.clear()
    this.#eventListeners.clear()
    await this.#running?.catch(() => undefined)
  }
}
