/** jobCounts: how many jobs each name has in each state, and how many of its queued jobs are due. */
import type { Sql } from '../../db/connect.js'
import type { JobState } from '../types.js'
import type { SchemaName } from './client.js'

export function jobCounts(sql: Sql, s: SchemaName): Promise<{ name: string; state: JobState; n: number; due: number }[]> {
  return sql<{ name: string; state: JobState; n: number; due: number }[]>`
      select name, state, count(*)::int as n, count(*) filter (where state = 'queued' and run_at <= now())::int as due
      from ${s}.jobs group by name, state order by name`
}
