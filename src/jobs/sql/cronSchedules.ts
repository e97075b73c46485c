/** cronSchedules: every stored cron schedule with its last claimed tick and claimer. */
import type { Sql } from '../../db/connect.js'
import type { SchemaName } from './client.js'

export interface ScheduleRow {
  name: string
  spec: string
  timezone: string | null
  last_tick: Date | null
  last_claimed_by: string | null
}

export function cronSchedules(sql: Sql, s: SchemaName): Promise<ScheduleRow[]> {
  return sql<ScheduleRow[]>`select name, spec, timezone, last_tick, last_claimed_by from ${s}.cron_schedules order by name`
}
