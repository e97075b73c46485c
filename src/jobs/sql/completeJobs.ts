/**
 * completeJobs: marks a batch of plain jobs complete, each only while its claim still holds it.
 * Commits without waiting for the WAL flush (a lost completion only makes a job run again).
 */
import { asyncCommit } from '../../db/schema.js'
import type { Sql } from '../../db/connect.js'
import type { SchemaName } from './client.js'

export interface CompleteJobs {
  ids: string[]
  claimIds: string[]
}

/** The ids that were completed (the others' claims were lost). */
export function completeJobs(sql: Sql, s: SchemaName, { ids, claimIds }: CompleteJobs): Promise<{ id: string }[]> {
  return sql<{ id: string }[]>`
          update ${s}.jobs set state = 'completed', finished_at = now(), claim_id = null
          where ${asyncCommit(sql)} and id = any(${ids}::bigint[]) and claim_id = any(${claimIds}::bigint[]) and state = 'running'
          returning id`
}
