/** singletonLeases: every singleton lease, with whether its holder's epoch is live. */
import type { Sql } from '../../db/connect.js'
import { isLive } from '../../membership/live.js'
import type { SchemaName } from './client.js'

export interface LeaseRow {
  name: string
  holder: string | null
  holder_epoch: string | null
  fence: string
  acquired_at: Date | null
  live: boolean
}

export function singletonLeases(sql: Sql, s: SchemaName): Promise<LeaseRow[]> {
  return sql<LeaseRow[]>`
      select l.name, l.holder, l.holder_epoch, l.fence, l.acquired_at,
             ${isLive(sql, s, sql`l.holder`, sql`l.holder_epoch`)} as live
      from ${s}.singleton_leases l order by l.name`
}
