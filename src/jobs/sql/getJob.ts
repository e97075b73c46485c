/** getJob: one stored job by id, or undefined (never enqueued, or swept). */
import type { Sql } from '../../db/connect.js'
import type { JobState } from '../types.js'
import type { SchemaName } from './client.js'

export interface JobRow {
  id: string
  name: string
  payload: unknown
  state: JobState
  priority: number
  run_at: Date
  key: string | null
  attempts: number
  claimed_by: string | null
  last_error: string | null
  created_at: Date
  finished_at: Date | null
}

export async function getJob(sql: Sql, s: SchemaName, id: string): Promise<JobRow | undefined> {
  const [row] = await sql<JobRow[]>`
    select id, name, payload, state, priority, run_at, key, attempts, claimed_by, last_error, created_at, finished_at from ${s}.jobs where id = ${id}`
  return row
}
