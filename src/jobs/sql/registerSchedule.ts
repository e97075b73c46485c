/**
 * registerSchedule: stores a cron schedule, its last tick starting at `baseline` (a new schedule
 * owes nothing before it); an existing schedule keeps its last tick and takes the new spec.
 */
import type { Sql } from '../../db/connect.js'
import type { SchemaName } from './client.js'

export interface RegisterSchedule {
  name: string
  spec: string
  timezone: string | null
  baseline: Date | null
}

export async function registerSchedule(sql: Sql, s: SchemaName, { name, spec, timezone, baseline }: RegisterSchedule): Promise<void> {
  await sql`
        insert into ${s}.cron_schedules (name, spec, timezone, last_tick) values (${name}, ${spec}, ${timezone}, ${baseline})
        on conflict (name) do update set spec = excluded.spec, timezone = excluded.timezone, updated_at = now()`
}
