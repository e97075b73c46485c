/** advanceSchedule: records a claimed tick (and the job it enqueued) on its cron schedule's row, in the claiming transaction. */
import { tag, type Client, type SchemaName } from './client.js'

export interface AdvanceSchedule {
  name: string
  tick: Date
  jobId: string
  instanceId: string
}

export async function advanceSchedule(tx: Client, s: SchemaName, { name, tick, jobId, instanceId }: AdvanceSchedule): Promise<void> {
  await tag(tx)`
        update ${s}.cron_schedules set last_tick = ${tick}, last_job_id = ${jobId}, last_claimed_by = ${instanceId}, updated_at = now()
        where name = ${name}`
}
