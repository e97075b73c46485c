/** releaseLease: frees a singleton's lease if this instance's `epoch` still holds it. */
import type { Sql } from '../../db/connect.js'
import type { SchemaName } from './client.js'

export interface ReleaseLease {
  name: string
  instanceId: string
  epoch: number
}

export async function releaseLease(sql: Sql, s: SchemaName, { name, instanceId, epoch }: ReleaseLease): Promise<void> {
  await sql`
        update ${s}.singleton_leases set holder = null, holder_epoch = null, released_at = now()
        where name = ${name} and holder = ${instanceId} and holder_epoch = ${epoch}`
}
