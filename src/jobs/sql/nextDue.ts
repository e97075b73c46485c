/** nextDue: in how many milliseconds the earliest queued job of `names` is due (negative: overdue); null when none is queued. */
import type { Sql } from '../../db/connect.js'
import type { SchemaName } from './client.js'

export async function nextDue(sql: Sql, s: SchemaName, names: string[]): Promise<number | null> {
  const [row] = await sql<{ due: number | null }[]>`
      select (extract(epoch from min(run_at) - now()) * 1000)::float8 as due
      from ${s}.jobs where state = 'queued' and name = any(${names}::text[])`
  return row?.due ?? null
}
