/**
 * What the lock tables say right now, for `chorus status` and the dashboard: counts of held locks
 * and queued waiters, and the oldest leases with their holders. Read-only; one round trip (two when
 * the schema comes from the client's search_path). A holder is live as membership's view says.
 */
import type postgres from 'postgres'
import { schemaName } from '../db/schema.js'
import { isLive } from '../membership/live.js'

export interface LockLeaseInfo {
  readonly name: string
  readonly path: boolean
  readonly mode: 'exclusive' | 'shared'
  readonly holder: string
  readonly epoch: number
  /** The fencing token, as a decimal string. */
  readonly token: string
  readonly acquiredAt: Date
  readonly expiresAt: Date | null
  /** False when the holder is down and the lease waits to be reaped. */
  readonly live: boolean
}

export interface LockStatus {
  /** Leases held (a path lock counts once). */
  readonly held: number
  readonly exclusive: number
  readonly shared: number
  /** Requests queued in the database (a request counts once). */
  readonly waiters: number
  /** The oldest leases, at most `limit`. */
  readonly leases: readonly LockLeaseInfo[]
}

interface Row {
  held: number
  exclusive: number
  shared: number
  waiters: number
  leases: {
    name: string
    space: number
    mode: 'S' | 'X'
    holder: string
    epoch: number
    token: string
    acquired_at: string
    expires_at: string | null
    live: boolean
  }[]
}

/**
 * Reads the lock status. `sql` is any postgres.js client on the cluster's database; `schema`
 * qualifies the tables (default `chorus`; pass `null` to rely on the client's search_path).
 */
export async function lockStatus(sql: postgres.Sql<any>, opts: { schema?: string | null; limit?: number } = {}): Promise<LockStatus> {
  const limit = Math.max(0, Math.min(opts.limit ?? 100, 10_000))
  const s = schemaName(sql, opts.schema === undefined ? 'chorus' : (opts.schema ?? (await currentSchema(sql))))
  const [row] = await sql<Row[]>`
    with held as (
      select l.*, ${isLive(sql, s, sql`l.holder`, sql`l.epoch`)} and (l.expires_at is null or l.expires_at > now()) as live
      from ${s}.lock_leases l
      where l.mode in ('S', 'X')
    )
    select
      (select count(*) from held where live)::int as held,
      (select count(*) from held where live and mode = 'X')::int as exclusive,
      (select count(*) from held where live and mode = 'S')::int as shared,
      (select count(distinct waiter_id) from ${s}.lock_waiters where expires_at > now())::int as waiters,
      coalesce((
        select json_agg(x) from (
          select name, space, mode, holder, epoch, token::text as token, acquired_at, expires_at, live
          from held order by acquired_at limit ${limit}
        ) x
      ), '[]'::json) as leases`
  const r = row!
  return {
    held: r.held,
    exclusive: r.exclusive,
    shared: r.shared,
    waiters: r.waiters,
    leases: r.leases.map((l) => ({
      name: l.name,
      path: l.space === 1,
      mode: l.mode === 'X' ? 'exclusive' : 'shared',
      holder: l.holder,
      epoch: Number(l.epoch),
      token: l.token,
      acquiredAt: new Date(l.acquired_at),
      expiresAt: l.expires_at === null ? null : new Date(l.expires_at),
      live: l.live,
    })),
  }
}

/** The first schema of the client's search_path: where its unqualified names would resolve. */
async function currentSchema(sql: postgres.Sql<any>): Promise<string> {
  const [row] = await sql<{ schema: string | null }[]>`select current_schema() as schema`
  return row?.schema ?? 'public'
}
