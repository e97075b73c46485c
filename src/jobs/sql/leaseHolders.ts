/** leaseHolders: who holds each of the singletons `names` (the ones with a lease row). */
import type { Sql } from '../../db/connect.js'
import type { SchemaName } from './client.js'

export interface LeaseHolder {
  name: string
  holder: string | null
  holder_epoch: string | null
}

export function leaseHolders(sql: Sql, s: SchemaName, names: string[]): Promise<LeaseHolder[]> {
  return sql<LeaseHolder[]>`
          select name, holder, holder_epoch from ${s}.singleton_leases where name = any(${names}::text[])`
}
