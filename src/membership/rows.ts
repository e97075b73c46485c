/**
 * Membership's reads of its own table, in one place: the view every instance keeps (live members
 * and those down in the last ten minutes, with their lease read on database time), and the
 * self-preservation rule that decides which expired members may be declared down. Instances,
 * watchers (balancer, dashboard, `chorus nginx --watch`) and `chorus status` all read through here.
 */
import type { Sql } from '../db/connect.js'
import type { SchemaName } from '../db/schema.js'
import type { MemberInfo, MemberStatus } from '../events.js'

/** Down members stay in the view (for dashboards and late readers) this long. */
export const KEEP_DOWN = '10 minutes'

/** A member as read from the table, with its lease as the database clock saw it at read time. */
export interface WatchedMember extends MemberInfo {
  readonly downAt: Date | null
  /** The member's lease length (for a Eureka registration, its `durationInSecs`). */
  readonly failAfterMs: number
  /** Milliseconds since `startedAt`, on database time. */
  readonly uptimeMs: number
  /** Milliseconds until the lease runs out (negative: it ran out), on database time. */
  readonly expiresInMs: number
  /** The lease ran out and no peer has declared the member down yet: it is not renewing. */
  readonly expired: boolean
  /** The lease ran out more than one lease ago (the self-preservation rule's second wait). */
  readonly longExpired: boolean
}

interface Row {
  instance_id: string
  epoch: string
  status: MemberStatus
  advertise_url: string | null
  roles: string[]
  metadata: Record<string, unknown>
  pid: number | null
  host: string | null
  started_at: Date
  heartbeat_at: Date
  down_at: Date | null
  down_reason: string | null
  fail_after_ms: number
  age_ms: number
  uptime_ms: number
  expires_in_ms: number
  expired: boolean
  long_expired: boolean
}

/** Live members and those down in the last ten minutes, sorted by instance id. */
export async function readMembers(sql: Sql, s: SchemaName): Promise<WatchedMember[]> {
  const rows = await sql<Row[]>`
    select instance_id, epoch, status, advertise_url, roles, metadata, pid, host, started_at, heartbeat_at, down_at, down_reason, fail_after_ms,
           (extract(epoch from now() - heartbeat_at) * 1000)::float8 as age_ms,
           (extract(epoch from now() - started_at) * 1000)::float8 as uptime_ms,
           (extract(epoch from expires_at - now()) * 1000)::float8 as expires_in_ms,
           expires_at < now() as expired,
           expires_at < now() - fail_after_ms * interval '1 millisecond' as long_expired
    from ${s}.members
    where status <> 'down' or down_at > now() - ${KEEP_DOWN}::interval
    order by instance_id`
  return rows.map(toMember)
}

/**
 * Which of the `expired` members may be declared down now, out of `live` live members
 * (`others` of them besides the one deciding): all of them — unless more than `burstRatio` of the
 * others expired at once (at least two), which looks like a network cut rather than deaths; then
 * only those expired for more than one further lease (self-preservation).
 */
export function declarable<M extends { readonly longExpired: boolean }>(expired: readonly M[], others: number, burstRatio: number): { victims: M[]; burst: boolean } {
  const burst = expired.length >= 2 && expired.length > burstRatio * others
  return { victims: burst ? expired.filter((m) => m.longExpired) : [...expired], burst }
}

function toMember(r: Row): WatchedMember {
  return {
    instanceId: r.instance_id,
    epoch: Number(r.epoch),
    status: r.status,
    advertiseUrl: r.advertise_url,
    roles: r.roles,
    metadata: r.metadata,
    pid: r.pid,
    host: r.host,
    startedAt: r.started_at,
    heartbeatAt: r.heartbeat_at,
    heartbeatAgeMs: Math.max(0, Math.round(r.age_ms)),
    downReason: r.down_reason,
    kind: r.metadata && typeof r.metadata === 'object' && 'eureka' in r.metadata ? 'eureka' : 'chorus',
    downAt: r.down_at,
    failAfterMs: r.fail_after_ms,
    uptimeMs: Math.max(0, Math.round(r.uptime_ms)),
    expiresInMs: r.expires_in_ms,
    expired: r.expired,
    longExpired: r.long_expired,
  }
}

/** The MemberInfo part of a watched member (what instances keep in their view and put in events). */
export function toInfo(m: WatchedMember): MemberInfo {
  return {
    instanceId: m.instanceId,
    epoch: m.epoch,
    status: m.status,
    advertiseUrl: m.advertiseUrl,
    roles: m.roles,
    metadata: m.metadata,
    pid: m.pid,
    host: m.host,
    startedAt: m.startedAt,
    heartbeatAt: m.heartbeatAt,
    heartbeatAgeMs: m.heartbeatAgeMs,
    downReason: m.downReason,
    kind: m.kind,
  }
}

