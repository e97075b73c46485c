/** cancelJob: a queued or running job becomes `cancelled`; returns the state it was in (and its claimer), or undefined when it was neither. */
import type { Sql } from '../../db/connect.js'
import type { JobState } from '../types.js'
import type { SchemaName } from './client.js'

export async function cancelJob(sql: Sql, s: SchemaName, id: string): Promise<{ was: JobState; claimed_by: string | null } | undefined> {
  const [row] = await sql<{ was: JobState; claimed_by: string | null }[]>`
      with prev as (select id, state, claimed_by from ${s}.jobs where id = ${id} for update)
      update ${s}.jobs j set state = 'cancelled', finished_at = now(), claim_id = null
      from prev where j.id = prev.id and prev.state in ('queued', 'running')
      returning prev.state as was, prev.claimed_by`
  return row
}
