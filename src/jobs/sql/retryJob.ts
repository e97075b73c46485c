/** retryJob: a failed or cancelled job is queued again, due now, with a fresh set of attempts; returns its name, or null when it was neither. */
import type { Sql } from '../../db/connect.js'
import type { SchemaName } from './client.js'

export async function retryJob(sql: Sql, s: SchemaName, id: string): Promise<string | null> {
  const [row] = await sql<{ id: string; name: string }[]>`
      update ${s}.jobs set state = 'queued', attempts = 0, run_at = now(), finished_at = null,
        claim_id = null, claimed_by = null, claimed_epoch = null
      where id = ${id} and state in ('failed', 'cancelled')
      returning id, name`
  return row?.name ?? null
}
