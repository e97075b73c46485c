/** createSchedule: stores a cron schedule that has no row yet (locked by `tx`); no row when it exists already. */
import { tag, type Client, type SchemaName } from './client.js'

export interface CreateSchedule {
  name: string
  spec: string
  timezone: string | null
}

export async function createSchedule(tx: Client, s: SchemaName, { name, spec, timezone }: CreateSchedule): Promise<{ last_tick: Date | null } | undefined> {
  const [row] = await tag(tx)<{ last_tick: Date | null }[]>`
          insert into ${s}.cron_schedules (name, spec, timezone) values (${name}, ${spec}, ${timezone})
          on conflict (name) do nothing returning last_tick`
  return row
}
