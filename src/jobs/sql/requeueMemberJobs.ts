/** requeueMemberJobs: the jobs a member declared down was running go back to the queue at once (its attempts count). */
import { asyncCommit } from '../../db/schema.js'
import type { Sql } from '../../db/connect.js'
import type { SchemaName } from './client.js'

export interface RequeueMemberJobs {
  instanceId: string
  epoch: number
}

export function requeueMemberJobs(sql: Sql, s: SchemaName, { instanceId, epoch }: RequeueMemberJobs): Promise<{ id: string; name: string }[]> {
  return sql<{ id: string; name: string }[]>`
        update ${s}.jobs set state = 'queued', claim_id = null, claimed_by = null, claimed_epoch = null,
          last_error = 'its claimer ' || claimed_by || ' (epoch ' || claimed_epoch || ') went down while running it'
        where ${asyncCommit(sql)} and id in (
          select id from ${s}.jobs where state = 'running' and claimed_by = ${instanceId} and claimed_epoch = ${epoch}
          for update skip locked)
        returning id, name`
}
