/** failJob: a failed attempt with no attempts left keeps the job as `failed`, while its claim still holds it. */
import { asyncCommit } from '../../db/schema.js'
import type { Sql } from '../../db/connect.js'
import type { SchemaName } from './client.js'

export interface FailJob {
  id: string
  claimId: string
  error: string
}

/** One row when failed; none when the claim was lost. */
export function failJob(sql: Sql, s: SchemaName, { id, claimId, error }: FailJob): Promise<{ id: string }[]> {
  return sql<{ id: string }[]>`
            update ${s}.jobs set state = 'failed', finished_at = now(), last_error = ${error}, claim_id = null
            where ${asyncCommit(sql)} and id = ${id} and claim_id = ${claimId} and state = 'running' returning id`
}
