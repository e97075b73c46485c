/** requeueJob: a failed attempt with attempts left goes back to the queue, due after `delayMs`, while its claim still holds it. */
import { asyncCommit } from '../../db/schema.js'
import type { Sql } from '../../db/connect.js'
import type { SchemaName } from './client.js'

export interface RequeueJob {
  id: string
  claimId: string
  delayMs: number
  error: string
}

/** One row when requeued; none when the claim was lost. */
export function requeueJob(sql: Sql, s: SchemaName, { id, claimId, delayMs, error }: RequeueJob): Promise<{ id: string }[]> {
  return sql<{ id: string }[]>`
            update ${s}.jobs set state = 'queued', run_at = now() + ${delayMs}::float8 * interval '1 millisecond', last_error = ${error},
              claim_id = null, claimed_by = null, claimed_epoch = null
            where ${asyncCommit(sql)} and id = ${id} and claim_id = ${claimId} and state = 'running' returning id`
}
