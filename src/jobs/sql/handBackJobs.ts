/** handBackJobs: claims of this instance's epoch go back to the queue without counting the attempt (drain, a late claim, an orphan). */
import { asyncCommit } from '../../db/schema.js'
import type { Sql } from '../../db/connect.js'
import type { SchemaName } from './client.js'

export interface HandBackJobs {
  claimIds: string[]
  instanceId: string
  epoch: number
}

export function handBackJobs(sql: Sql, s: SchemaName, { claimIds, instanceId, epoch }: HandBackJobs): Promise<{ id: string; name: string }[]> {
  return sql<{ id: string; name: string }[]>`
        update ${s}.jobs set state = 'queued', attempts = greatest(attempts - 1, 0), claim_id = null, claimed_by = null, claimed_epoch = null
        where ${asyncCommit(sql)} and claim_id = any(${claimIds}::bigint[]) and claimed_by = ${instanceId} and claimed_epoch = ${epoch} and state = 'running'
        returning id, name`
}
