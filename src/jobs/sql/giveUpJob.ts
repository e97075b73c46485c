/**
 * giveUpJob: a job claimed beyond its last allowed attempt (the claimer of that attempt went down
 * with it) fails without running again; the attempt this claim counted is taken back.
 */
import { asyncCommit } from '../../db/schema.js'
import type { Sql } from '../../db/connect.js'
import type { SchemaName } from './client.js'

export interface GiveUpJob {
  id: string
  claimId: string
}

/** One row, with the error kept from the last attempt, when failed; none when the claim was lost. */
export function giveUpJob(sql: Sql, s: SchemaName, { id, claimId }: GiveUpJob): Promise<{ last_error: string | null }[]> {
  return sql<{ last_error: string | null }[]>`
        update ${s}.jobs set state = 'failed', finished_at = now(), attempts = attempts - 1, claim_id = null
        where ${asyncCommit(sql)} and id = ${id} and claim_id = ${claimId} and state = 'running' returning last_error`
}
