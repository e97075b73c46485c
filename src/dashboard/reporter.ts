/**
 * The instance side of the dashboard: every couple of seconds it upserts this instance's live
 * figures into `instance_stats` (one row per instance, unlogged), and it carries out the actions
 * the dashboard sends on the control channel. It keeps reporting while draining, so the page shows
 * a draining instance finishing its work; it removes its row when the instance leaves.
 */
import type { Logger } from 'pino'
import { channels } from '../bus/channels.js'
import { schemaName, type SchemaName } from '../db/schema.js'
import { toError } from '../errors.js'
import type { Subsystem, SubsystemDeps } from '../subsystem.js'
import { decodeCommand } from './control.js'
import { Activity, ProcessSampler, type InstanceReport, type ReportSources } from './report.js'

export const REPORT_INTERVAL_MS = 2000

export class Reporter implements Subsystem {
  readonly name = 'dashboard'
  readonly #deps: SubsystemDeps
  readonly #s: SchemaName
  readonly #sources: ReportSources
  readonly #log: Logger
  readonly #intervalMs: number
  readonly #sampler = new ProcessSampler()
  readonly #activity: Activity
  #timer: NodeJS.Timeout | null = null
  #unsubscribe: (() => void) | null = null
  #inFlight: Promise<void> | null = null
  #closed = false
  #lastErrorLog = 0

  constructor(deps: SubsystemDeps, sources: ReportSources, opts: { intervalMs?: number } = {}) {
    this.#deps = deps
    this.#s = schemaName(deps.db.sql, deps.db.schema)
    this.#sources = sources
    this.#log = deps.log.child({ subsystem: 'dashboard' })
    this.#intervalMs = opts.intervalMs ?? REPORT_INTERVAL_MS
    this.#activity = new Activity(deps.events)
  }

  async start(): Promise<void> {
    this.#unsubscribe = this.#deps.bus.subscribe(channels.dashboardControl, (data) => this.#control(data))
    await this.report()
    this.#timer = setInterval(() => void this.report(), this.#intervalMs)
    this.#timer.unref()
  }

  /** What this instance reports now (resets the "since the last report" figures). */
  #snapshot(): InstanceReport {
    const rt = this.#sources.realtime()
    const locks = this.#sources.locks()
    const bus = this.#deps.bus.stats
    return {
      v: 1,
      ...this.#sampler.sample(),
      state: this.#deps.members.self.state,
      sessions: rt?.localSessions ?? 0,
      bus: { published: bus.published, delivered: bus.delivered, gaps: bus.gaps, reconnects: bus.reconnects },
      realtime: rt ? { ...rt.stats } : { published: 0, delivered: 0, connections: 0, gaps: 0 },
      caches: [...this.#sources.caches()].map(([name, s]) => ({ name, hits: s.hits, misses: s.misses, size: s.size })),
      jobs: { ...this.#activity.jobs },
      locks: { ...this.#activity.locks, held: locks?.held ?? 0, waiting: locks?.waiting ?? 0 },
    }
  }

  /** Writes one report; a report still in flight (a slow database) is not doubled. */
  report(): Promise<void> {
    if (this.#closed) return Promise.resolve()
    this.#inFlight ??= this.#write().finally(() => (this.#inFlight = null))
    return this.#inFlight
  }

  async #write(): Promise<void> {
    const self = this.#deps.members.self
    if (self.state === 'joining' || self.state === 'left') return
    const sql = this.#deps.db.sql
    try {
      await sql`
        insert into ${this.#s}.instance_stats (instance_id, epoch, reported_at, stats)
        values (${self.instanceId}, ${self.epoch}, now(), ${sql.json(this.#snapshot() as never)})
        on conflict (instance_id) do update set epoch = excluded.epoch, reported_at = excluded.reported_at, stats = excluded.stats`
    } catch (err) {
      if (Date.now() - this.#lastErrorLog > 30_000) {
        this.#lastErrorLog = Date.now()
        this.#log.warn({ err: toError(err) }, 'could not report to the dashboard; will retry')
      }
    }
  }

  #control(data: string): void {
    const cmd = decodeCommand(data)
    if (!cmd) return
    const self = this.#deps.members.self
    switch (cmd.op) {
      case 'drain':
        if (cmd.instanceId !== self.instanceId || (cmd.epoch !== undefined && cmd.epoch !== self.epoch)) return
        this.#log.warn('draining: asked by the dashboard')
        this.#sources.drain().then(
          () => this.report(),
          (err: unknown) => this.#log.error({ err: toError(err) }, 'drain asked by the dashboard failed'),
        )
        return
      default: {
        const never: never = cmd.op
        return never
      }
    }
  }

  async close(): Promise<void> {
    this.#closed = true
    if (this.#timer) clearInterval(this.#timer)
    this.#unsubscribe?.()
    this.#activity.close()
    this.#sampler.close()
    await this.#inFlight?.catch(() => undefined)
    const self = this.#deps.members.self
    await this.#deps.db.sql`delete from ${this.#s}.instance_stats where instance_id = ${self.instanceId} and epoch = ${self.epoch}`.catch(() => undefined)
  }
}
