/** staleClaims: claim ids this instance's epoch has held for over 30 seconds (the worker hands back those it no longer runs). */
import type { Sql } from '../../db/connect.js'
import type { SchemaName } from './client.js'

export interface StaleClaims {
  instanceId: string
  epoch: number
}

export async function staleClaims(sql: Sql, s: SchemaName, { instanceId, epoch }: StaleClaims): Promise<string[]> {
  const rows = await sql<{ claim_id: string }[]>`
        select claim_id from ${s}.jobs
        where state = 'running' and claimed_by = ${instanceId} and claimed_epoch = ${epoch}
          and claimed_at < now() - interval '30 seconds'`
  return rows.map((r) => r.claim_id)
}
