/** sweepJobs: deletes up to 5000 completed and cancelled jobs finished longer than `keepMs` ago (freeing their dedupe keys). */
import { asyncCommit } from '../../db/schema.js'
import type { Sql } from '../../db/connect.js'
import type { SchemaName } from './client.js'

export async function sweepJobs(sql: Sql, s: SchemaName, keepMs: number): Promise<void> {
  await sql`
        delete from ${s}.jobs where ${asyncCommit(sql)} and id in (
          select id from ${s}.jobs where state in ('completed', 'cancelled')
            and finished_at < now() - ${keepMs}::float8 * interval '1 millisecond'
          limit 5000)`
}
