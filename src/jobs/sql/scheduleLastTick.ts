/** scheduleLastTick: the last claimed tick of a cron schedule (null when none, or no such schedule). */
import type { Sql } from '../../db/connect.js'
import type { SchemaName } from './client.js'

export async function scheduleLastTick(sql: Sql, s: SchemaName, name: string): Promise<Date | null> {
  const [row] = await sql<{ last_tick: Date | null }[]>`select last_tick from ${s}.cron_schedules where name = ${name}`
  return row?.last_tick ?? null
}
