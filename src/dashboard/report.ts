/**
 * What one instance tells the dashboard every few seconds: process health (event-loop lag, memory,
 * CPU) and the cumulative counters of its subsystems. Counters only grow within one process and
 * epoch, so the dashboard turns the difference between two reports into rates.
 */
import { monitorEventLoopDelay, performance, type IntervalHistogram } from 'node:perf_hooks'
import type { CacheStats } from '../cache/near-cache.js'
import type { Events } from '../events.js'
import type { SelfState } from '../membership/membership.js'

export interface InstanceReport {
  readonly v: 1
  readonly pid: number
  readonly state: SelfState
  readonly uptimeSec: number
  /** Event-loop delay since the previous report, in milliseconds. */
  readonly eventLoop: { readonly meanMs: number; readonly p99Ms: number; readonly maxMs: number }
  readonly memory: { readonly rssBytes: number; readonly heapUsedBytes: number; readonly heapTotalBytes: number }
  /** CPU time over wall time since the previous report (100 = one core busy). */
  readonly cpuPercent: number
  /** WebSocket (STOMP) sessions connected to this instance. */
  readonly sessions: number
  readonly bus: { readonly published: number; readonly delivered: number; readonly gaps: number; readonly reconnects: number }
  readonly realtime: { readonly published: number; readonly delivered: number; readonly connections: number; readonly gaps: number }
  readonly caches: readonly { readonly name: string; readonly hits: number; readonly misses: number; readonly size: number }[]
  readonly jobs: { readonly enqueued: number; readonly started: number; readonly completed: number; readonly failed: number }
  readonly locks: { readonly acquired: number; readonly released: number; readonly lost: number; readonly held: number; readonly waiting: number }
}

/** Where the figures come from; read at each report so subsystems wired later are seen. */
export interface ReportSources {
  realtime(): { readonly stats: InstanceReport['realtime']; readonly localSessions: number } | undefined
  caches(): Iterable<readonly [string, CacheStats]>
  locks(): { readonly held: number; readonly waiting: number } | undefined
  /** Drains this instance (the dashboard's drain action). */
  drain(): Promise<void>
}

/** Event-loop delay, CPU and memory of this process, each read as "since the last sample". */
export class ProcessSampler {
  readonly #delay: IntervalHistogram
  #cpu = process.cpuUsage()
  #at = performance.now()

  constructor() {
    this.#delay = monitorEventLoopDelay({ resolution: 10 })
    this.#delay.enable()
  }

  sample(): Pick<InstanceReport, 'eventLoop' | 'memory' | 'cpuPercent' | 'uptimeSec' | 'pid'> {
    const now = performance.now()
    const cpu = process.cpuUsage(this.#cpu)
    const wallUs = Math.max(1, (now - this.#at) * 1000)
    this.#cpu = process.cpuUsage()
    this.#at = now
    const ms = (ns: number) => (Number.isFinite(ns) ? Math.round(ns / 1e4) / 100 : 0)
    const d = this.#delay
    // The histogram's floor is its resolution; an idle loop reads as ~10 ms otherwise.
    const beyond = (ns: number) => Math.max(0, Math.round((ms(ns) - 10) * 100) / 100)
    const eventLoop = d.count === 0 ? { meanMs: 0, p99Ms: 0, maxMs: 0 } : { meanMs: beyond(d.mean), p99Ms: beyond(d.percentile(99)), maxMs: beyond(d.max) }
    d.reset()
    const mem = process.memoryUsage()
    return {
      pid: process.pid,
      uptimeSec: Math.round(process.uptime()),
      eventLoop,
      memory: { rssBytes: mem.rss, heapUsedBytes: mem.heapUsed, heapTotalBytes: mem.heapTotal },
      cpuPercent: Math.round(((cpu.user + cpu.system) / wallUs) * 1000) / 10,
    }
  }

  close(): void {
    this.#delay.disable()
  }
}

/** Tallies of job and lock activity on this instance, counted from the cluster's events (what is held now comes from the locks themselves). */
export class Activity {
  readonly jobs = { enqueued: 0, started: 0, completed: 0, failed: 0 }
  readonly locks = { acquired: 0, released: 0, lost: 0 }
  readonly #offs: (() => void)[]

  constructor(events: Events) {
    this.#offs = [
      events.on('job:enqueued', (e) => void (e.deduplicated || this.jobs.enqueued++)),
      events.on('job:started', () => void this.jobs.started++),
      events.on('job:completed', () => void this.jobs.completed++),
      events.on('job:failed', () => void this.jobs.failed++),
      events.on('lock:acquired', () => void this.locks.acquired++),
      events.on('lock:released', () => void this.locks.released++),
      events.on('lock:lost', () => void this.locks.lost++),
    ]
  }

  close(): void {
    for (const off of this.#offs) off()
  }
}
