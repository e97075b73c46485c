/**
 * acquireLease: takes a singleton's lease for this instance's epoch when it is free, already this
 * epoch's, or held by an epoch that is no longer live; each new holder gets the next fence.
 */
import type { Sql } from '../../db/connect.js'
import { isLive } from '../../membership/live.js'
import type { SchemaName } from './client.js'

export interface AcquireLease {
  name: string
  instanceId: string
  epoch: number
}

/** The fence of this holding, or null when another live instance holds the lease. */
export async function acquireLease(sql: Sql, s: SchemaName, { name, instanceId, epoch }: AcquireLease): Promise<number | null> {
  const rows = await sql<{ fence: string }[]>`
        insert into ${s}.singleton_leases as l (name, holder, holder_epoch, fence, acquired_at)
        values (${name}, ${instanceId}, ${epoch}, 1, now())
        on conflict (name) do update set holder = excluded.holder, holder_epoch = excluded.holder_epoch,
          fence = l.fence + 1, acquired_at = now(), released_at = null
        where l.holder is null
           or (l.holder = excluded.holder and l.holder_epoch = excluded.holder_epoch)
           or not ${isLive(sql, s, sql`l.holder`, sql`l.holder_epoch`)}
        returning fence`
  return rows[0] ? Number(rows[0].fence) : null
}
