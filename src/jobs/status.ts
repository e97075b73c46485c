/**
 * A read-only summary of jobs, singletons and cron schedules for `chorus status` and the
 * dashboard: it needs only a connection to the schema, not a running cluster.
 */
import type { Sql } from '../db/connect.js'
import { schemaName } from '../db/schema.js'
import { nextTick } from './cron.js'
import type { JobState } from './types.js'

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
  /** The holder's epoch is live in the membership table. */
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
  const [counts, leases, schedules] = await Promise.all([
    sql<{ name: string; state: JobState; n: number; due: number }[]>`
      select name, state, count(*)::int as n, count(*) filter (where state = 'queued' and run_at <= now())::int as due
      from ${s}.jobs group by name, state order by name`,
    sql<{ name: string; holder: string | null; holder_epoch: string | null; fence: string; acquired_at: Date | null; live: boolean }[]>`
      select l.name, l.holder, l.holder_epoch, l.fence, l.acquired_at,
             exists (select 1 from ${s}.members m where m.instance_id = l.holder and m.epoch = l.holder_epoch and m.status <> 'down') as live
      from ${s}.singleton_leases l order by l.name`,
    sql<{ name: string; spec: string; timezone: string | null; last_tick: Date | null; last_claimed_by: string | null }[]>`
      select name, spec, timezone, last_tick, last_claimed_by from ${s}.cron_schedules order by name`,
  ])
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
