/**
 * claimJobs: when asked (`handBackDead`), hands back claims whose epoch is no longer live (the
 * fallback to `member:down`; a scan of every running job, so not on every claim), then claims up
 * to `counts[i]` due jobs of `names[i]` for this instance's epoch, in one statement, with
 * `for update skip locked` so claimers never wait on each other.
 *
 * Commits without waiting for the WAL flush, on every claim: the setting sits in the claiming
 * UPDATE's own condition (a one-time filter, evaluated even when it claims nothing), not in the
 * hand-back's, which `handBackDead = false` skips. A claim lost to a database crash leaves its job
 * queued, so it runs again (at least once). The claim id sequence may then hand a lost claim's id
 * out again; a transactional completion also matches the claimer's epoch and the running state, so
 * such a job still takes effect once. A transactional job's completion commits synchronously, and
 * the WAL is flushed in order, so a durable completion implies a durable claim. Enqueues stay
 * synchronous: a job, once enqueued, is never lost.
 */
import { asyncCommit } from '../../db/schema.js'
import { isLive } from '../../membership/live.js'
import type { Sql } from '../../db/connect.js'
import type { SchemaName } from './client.js'

/** A claimed job (`requeued: false`), or a job handed back from a dead claimer (`requeued: true`, only id and name). */
export interface ClaimRow {
  requeued: boolean
  id: string
  name: string
  payload: unknown
  attempts: number
  claim_id: string
  key: string | null
  priority: number
  run_at: Date
  created_at: Date
}

export interface ClaimJobs {
  names: string[]
  counts: number[]
  instanceId: string
  epoch: number
  /** The claim id sequence, as `sequenceName(schema, 'job_claims')`. */
  claimSeq: string
  /** Also hand back the claims of epochs no longer live. */
  handBackDead: boolean
}

export function claimJobs(sql: Sql, s: SchemaName, { names, counts, instanceId, epoch, claimSeq, handBackDead }: ClaimJobs): Promise<ClaimRow[]> {
  // Planned once per connection, not on every claim: the server keeps a generic plan only when it
  // costs no more than the custom ones. So the hand-back is a second statement text (rounds without
  // it do not pay for its scan), the wanted names come as a JSON set (estimated alike in both plans,
  // where an array's unnest is one row in a custom plan and ten in the generic one), and the update
  // finds its rows by primary key whatever the estimates say.
  const wanted = JSON.stringify(names.map((name, i) => ({ name, n: counts[i] })))
  const dead = handBackDead
    ? sql`
      dead as (
        update ${s}.jobs set state = 'queued', claim_id = null, claimed_by = null, claimed_epoch = null,
          last_error = 'its claimer ' || claimed_by || ' (epoch ' || claimed_epoch || ') went down while running it'
        where id in (
          select j.id from ${s}.jobs j
          where j.state = 'running'
            and not ${isLive(sql, s, sql`j.claimed_by`, sql`j.claimed_epoch`)}
          for update of j skip locked)
        returning id, name
      ),`
    : sql``
  const deadRows = handBackDead ? sql`union all select true, id, name, null, null, null, null, null, null, null from dead` : sql``
  return sql<ClaimRow[]>`
      with ${dead}
      next as (
        select c.id from jsonb_to_recordset(${wanted}::text::jsonb) as w(name text, n int) cross join lateral (
          select j.id from ${s}.jobs j
          where j.state = 'queued' and j.name = w.name and j.run_at <= now()
          order by j.priority desc, j.run_at, j.id
          limit w.n
          for update of j skip locked) c
      ),
      claimed as (
        update ${s}.jobs j set state = 'running', attempts = j.attempts + 1, claim_id = nextval(${claimSeq}::regclass),
          claimed_by = ${instanceId}, claimed_epoch = ${epoch}, claimed_at = now()
        where ${asyncCommit(sql)} and j.id = any(array(select id from next))
        returning j.id, j.name, j.payload, j.attempts, j.claim_id, j.key, j.priority, j.run_at, j.created_at
      )
      (select false as requeued, id, name, payload, attempts, claim_id, key, priority, run_at, created_at from claimed
       order by priority desc, run_at, id)
      ${deadRows}`
}
