/**
 * The one definition of "live" for SQL outside membership: the view `live_members` (migration 012,
 * a member whose status is not `down`). Subsystems that fence work by (instance, epoch) build their
 * condition with `isLive`, and never read the members table themselves.
 */
import type postgres from 'postgres'
import type { SchemaName } from '../db/schema.js'

type AnySql = postgres.Sql<any> | postgres.TransactionSql<any>
type Fragment = postgres.PendingQuery<postgres.Row[]>

/**
 * `exists (…)`: the member `instance` at `epoch` is live. `instance` and `epoch` are column
 * fragments of the caller's query (`sql\`j.claimed_by\``) or values.
 *
 *   sql`… where not ${isLive(sql, s, sql`j.claimed_by`, sql`j.claimed_epoch`)}`
 */
export function isLive(sql: AnySql, s: SchemaName, instance: Fragment | string, epoch: Fragment | number | string): Fragment {
  return sql`exists (select 1 from ${s}.live_members lm where lm.instance_id = ${instance} and lm.epoch = ${epoch})`
}

/** The view itself, for a join or a list: `select … from ${liveMembers(s)} m`. */
export function liveMembers(sql: AnySql, s: SchemaName): Fragment {
  return sql`${s}.live_members`
}
