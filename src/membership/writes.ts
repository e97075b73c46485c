/**
 * The statements that write the members table (membership's own; nobody else writes it): an
 * instance's join (inserting its row, or taking over one whose holder is gone: down, expired, or the
 * epoch named in `replaceEpoch`), renewal, drain and leave, and declaring expired members down.
 * `scope` `external` limits a statement to registrations made through the Eureka API
 * (external.ts), so a Eureka client can never renew or cancel a Chorus instance's row.
 */
import { hostname } from 'node:os'
import type { Sql } from '../db/connect.js'
import type { SchemaName } from '../db/schema.js'
import type { ResolvedOptions } from '../options.js'

export type Scope = 'any' | 'external'

type SelfOptions = Pick<ResolvedOptions, 'instanceId' | 'advertiseUrl' | 'roles' | 'metadata' | 'failAfterMs'>

/** Inserts or takes over the row under a new epoch; null when a live holder keeps it. */
export async function insertSelf(control: Sql, s: SchemaName, epochs: string, o: SelfOptions, status: 'up' | 'draining', replaceEpoch: number): Promise<number | null> {
  const rows = await control<{ epoch: string }[]>`
    insert into ${s}.members as m (instance_id, epoch, status, advertise_url, roles, metadata, pid, host, fail_after_ms, expires_at)
    values (${o.instanceId}, nextval(${epochs}::regclass), ${status}, ${o.advertiseUrl}, ${o.roles as string[]},
            ${control.json(o.metadata as never)}, ${process.pid}, ${hostname()}, ${o.failAfterMs},
            now() + ${o.failAfterMs} * interval '1 millisecond')
    on conflict (instance_id) do update set
      epoch = excluded.epoch, status = excluded.status, advertise_url = excluded.advertise_url,
      roles = excluded.roles, metadata = excluded.metadata, pid = excluded.pid, host = excluded.host,
      fail_after_ms = excluded.fail_after_ms, started_at = now(), heartbeat_at = now(),
      expires_at = excluded.expires_at, down_at = null, down_reason = null
    where m.status = 'down' or m.expires_at < now() or m.epoch = ${replaceEpoch}
    returning epoch`
  return rows.length === 0 ? null : Number(rows[0]!.epoch)
}

/** Who holds the row of `instanceId` (after a refused join). */
export async function holderOf(control: Sql, s: SchemaName, instanceId: string): Promise<{ epoch: string; host: string | null; pid: number | null } | undefined> {
  const [row] = await control<{ epoch: string; host: string | null; pid: number | null }[]>`
    select epoch, host, pid from ${s}.members where instance_id = ${instanceId}`
  return row
}

const scoped = (sql: Sql, scope: Scope) => (scope === 'external' ? sql`and metadata ? 'eureka'` : sql``)

/** Pushes the lease forward (`epoch` null: whatever the epoch); false when the member is not live. */
export async function renewLease(sql: Sql, s: SchemaName, instanceId: string, epoch: number | null, scope: Scope): Promise<boolean> {
  const rows = await sql`
    update ${s}.members set heartbeat_at = now(), expires_at = now() + fail_after_ms * interval '1 millisecond'
    where instance_id = ${instanceId} and status <> 'down' ${epoch === null ? sql`` : sql`and epoch = ${epoch}`} ${scoped(sql, scope)}
    returning 1`
  return rows.length > 0
}

/** Marks an up member draining. */
export async function markDraining(sql: Sql, s: SchemaName, instanceId: string, epoch: number): Promise<void> {
  await sql`update ${s}.members set status = 'draining' where instance_id = ${instanceId} and epoch = ${epoch} and status = 'up'`
}

/** A graceful departure: the member is down at once (reason `left`); false when it was not live. */
export async function markLeft(sql: Sql, s: SchemaName, instanceId: string, epoch: number | null, scope: Scope): Promise<boolean> {
  const rows = await sql`
    update ${s}.members set status = 'down', down_at = now(), down_reason = 'left'
    where instance_id = ${instanceId} and status <> 'down' ${epoch === null ? sql`` : sql`and epoch = ${epoch}`} ${scoped(sql, scope)}
    returning 1`
  return rows.length > 0
}

/**
 * Declares the members `ids` down (reason `expired`) where their lease has indeed run out; `scope`
 * `external` touches only registrations made through the Eureka API. Returns the ids marked down.
 */
export async function markExpiredDown(sql: Sql, s: SchemaName, ids: readonly string[], scope: Scope): Promise<string[]> {
  const rows = await sql<{ instance_id: string }[]>`
    update ${s}.members set status = 'down', down_at = now(), down_reason = 'expired'
    where instance_id = any(${ids as string[]}::text[]) and status <> 'down' and expires_at < now()
      ${scoped(sql, scope)}
    returning instance_id`
  return rows.map((r) => r.instance_id)
}
