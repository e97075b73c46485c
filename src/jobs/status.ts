/**
 * A read-only summary of jobs, singletons and cron schedules for `chorus status` and the
 * dashboard: it needs only a connection to the schema, not a running cluster.
 */
import type { Sql } from '../db/connect.js'
import { schemaName } from '../db/schema.js'
import { nextTick } from './cron.js'
import { cronSchedules } from './sql/cronSchedules.js'
import { jobCounts } from './sql/jobCounts.js'
import { singletonLeases } from './sql/singletonLeases.js'

export interface JobCounts {
  readonly name: string
  readonly queued: number
  /** Queued jobs whose run time has come. */
  readonly due: number
  readonly running: number
  readonly completed: number
  readonly failed: number
  readonly cancelled: number
}

export interface SingletonStatus {
  readonly name: string
  readonly holder: string | null
  readonly epoch: number | null
  /** The holder's epoch is live (in `live_members`). */
  readonly live: boolean
  readonly fence: number
  readonly since: Date | null
}

export interface CronStatus {
  readonly name: string
  readonly spec: string
  readonly timezone: string | null
  readonly lastTick: Date | null
  readonly lastClaimedBy: string | null
  readonly nextTick: Date | null
}

export interface JobStatus {
  readonly jobs: readonly JobCounts[]
  readonly singletons: readonly SingletonStatus[]
  readonly cron: readonly CronStatus[]
}

/**
 * Counts of jobs by name and state, singleton holders, and each cron schedule's last and next tick.
 * `schema` qualifies the tables (default `chorus`).
 */
export async function jobStatus(sql: Sql, opts: { schema?: string } = {}): Promise<JobStatus> {
  const s = schemaName(sql, opts.schema ?? 'chorus')
  const [counts, leases, schedules] = await Promise.all([jobCounts(sql, s), singletonLeases(sql, s), cronSchedules(sql, s)])
  const byName = new Map<string, { name: string; queued: number; due: number; running: number; completed: number; failed: number; cancelled: number }>()
  for (const c of counts) {
    let row = byName.get(c.name)
    if (!row) byName.set(c.name, (row = { name: c.name, queued: 0, due: 0, running: 0, completed: 0, failed: 0, cancelled: 0 }))
    row[c.state] += c.n
    row.due += c.due
  }
  const now = new Date()
  return {
    jobs: [...byName.values()],
    singletons: leases.map((l) => ({
      name: l.name,
      holder: l.holder,
      epoch: l.holder_epoch === null ? null : Number(l.holder_epoch),
      live: l.live,
      fence: Number(l.fence),
      since: l.holder ? l.acquired_at : null,
    })),
    cron: schedules.map((s) => ({
      name: s.name,
      spec: s.spec,
      timezone: s.timezone,
      lastTick: s.last_tick,
      lastClaimedBy: s.last_claimed_by,
      nextTick: nextTick(s.spec, s.timezone, now),
    })),
  }
}
