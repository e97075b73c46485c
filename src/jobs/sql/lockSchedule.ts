/**
 * lockSchedule: locks a cron schedule's row in `tx` and reads its last tick, without waiting: no
 * row when another instance holds the lock (it is claiming) or the schedule is not stored.
 */
import { tag, type Client, type SchemaName } from './client.js'

export async function lockSchedule(tx: Client, s: SchemaName, name: string): Promise<{ last_tick: Date | null } | undefined> {
  const [row] = await tag(tx)<{ last_tick: Date | null }[]>`
        select last_tick from ${s}.cron_schedules where name = ${name} for update skip locked`
  return row
}
