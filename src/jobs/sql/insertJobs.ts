/**
 * insertJobs: stores a batch of jobs in one statement (parallel arrays, one entry per job, in
 * order). Jobs whose key is held by a kept job are not inserted and not returned.
 */
import type { Sql } from '../../db/connect.js'
import type { SchemaName } from './client.js'
import type { InsertedJob } from './insertJob.js'

export interface InsertJobs {
  names: string[]
  /** Payloads as JSON text. */
  payloads: string[]
  priorities: number[]
  /** Epoch ms, or -1 where `delays` applies. */
  ats: number[]
  delays: number[]
  /** '' for none. */
  keys: string[]
}

export function insertJobs(sql: Sql, s: SchemaName, { names, payloads, priorities, ats, delays, keys }: InsertJobs): Promise<InsertedJob[]> {
  return sql<InsertedJob[]>`
      with input as (
        select * from unnest(${names}::text[], ${payloads}::text[], ${priorities}::int[], ${ats}::float8[], ${delays}::float8[], ${keys}::text[])
          with ordinality as t(name, payload, priority, at_ms, delay_ms, key, ord)
      ), ins as (
        insert into ${s}.jobs (name, payload, priority, run_at, key)
        select name, payload::jsonb, priority,
               case when at_ms >= 0 then to_timestamp(at_ms / 1000) else now() + delay_ms * interval '1 millisecond' end,
               nullif(key, '')
        from input order by ord
        on conflict (name, key) where key is not null do nothing
        returning id, name, key, (extract(epoch from run_at - now()) * 1000)::float8 as due_in_ms
      )
      select id, name, key, due_in_ms from ins`
}
