/**
 * External members: services that register through the dashboard's Eureka API instead of running
 * Chorus. Each is a member row (id `<APP>:<instanceId>`, no advertise URL so nothing routes to it,
 * its registry document under `metadata.eureka`) whose lease is the client's own; membership writes
 * these rows as it writes its own, so every rule about the table — one epoch per life, leases on
 * database time, down only once declared, the self-preservation rule — holds for them too. Every
 * statement here is limited to external rows: a Eureka client can never renew, cancel or override a
 * Chorus instance.
 */
import type { Logger } from 'pino'
import type { Bus } from '../bus/bus.js'
import { channels } from '../bus/channels.js'
import type { Sql } from '../db/connect.js'
import { schemaName, sequenceName, type SchemaName } from '../db/schema.js'
import { declarable, readMembers, type WatchedMember } from './rows.js'
import { markExpiredDown, markLeft, renewLease } from './writes.js'

export interface ExternalRegistration {
  /** The member id, `<APP>:<instanceId>`. */
  readonly id: string
  /** Ids no live Chorus member may hold (compared without case) for the registration to be accepted. */
  readonly reservedFor: readonly string[]
  /** The status the registration's effective registry status maps to. */
  readonly status: 'up' | 'draining'
  readonly host: string | null
  readonly leaseMs: number
  /** The registry's document (kept under `metadata.eureka`, with `registeredAt` kept across renewals). */
  readonly document: Record<string, unknown>
}

/** Largest merged `metadata.eureka.metadata` a registration may carry. */
const MAX_METADATA_BYTES = 8192

export class ExternalMembers {
  readonly #sql: Sql
  readonly #s: SchemaName
  readonly #epochs: string
  readonly #bus: Bus

  constructor(deps: { sql: Sql; schema: string; bus: Bus; log: Logger }) {
    this.#sql = deps.sql
    this.#s = schemaName(deps.sql, deps.schema)
    this.#epochs = sequenceName(deps.schema, 'member_epochs')
    this.#bus = deps.bus
  }

  /**
   * Registers (or registers again) a service; its lease starts now. A live registration keeps its
   * epoch (the registry replaces the lease); a down one starts a new epoch. Returns the id of the
   * live Chorus member that holds the name instead (nothing written), or null once registered.
   */
  async register(r: ExternalRegistration): Promise<string | null> {
    const sql = this.#sql
    const clash = await sql<{ instance_id: string }[]>`
      select instance_id from ${this.#s}.members
      where status <> 'down' and not metadata ? 'eureka' and lower(instance_id) in (select lower(x) from unnest(${r.reservedFor as string[]}::text[]) x)
      limit 1`
    if (clash.length > 0) return clash[0]!.instance_id
    const metadata = { eureka: { ...r.document, registeredAt: Date.now() } }
    const rows = await sql<{ epoch: string }[]>`
      insert into ${this.#s}.members as m (instance_id, epoch, status, advertise_url, roles, metadata, pid, host, fail_after_ms, expires_at)
      values (${r.id}, nextval(${this.#epochs}::regclass), ${r.status}, null, '{}', ${sql.json(metadata as never)}, null, ${r.host}, ${r.leaseMs},
              now() + ${r.leaseMs} * interval '1 millisecond')
      on conflict (instance_id) do update set
        epoch = case when m.status = 'down' then excluded.epoch else m.epoch end,
        started_at = case when m.status = 'down' then now() else m.started_at end,
        status = excluded.status, advertise_url = null, roles = '{}', pid = null, host = excluded.host,
        metadata = jsonb_set(excluded.metadata, '{eureka,registeredAt}',
                             case when m.status = 'down' or not m.metadata ? 'eureka' then excluded.metadata->'eureka'->'registeredAt'
                                  else coalesce(m.metadata->'eureka'->'registeredAt', excluded.metadata->'eureka'->'registeredAt') end),
        fail_after_ms = excluded.fail_after_ms, heartbeat_at = now(), expires_at = excluded.expires_at, down_at = null, down_reason = null
      where m.metadata ? 'eureka' or m.status = 'down'
      returning epoch`
    if (rows.length === 0) return r.id
    this.#nudge()
    return null
  }

  /** Renews the lease; false when there is no such live registration. */
  renew(id: string): Promise<boolean> {
    return renewLease(this.#sql, this.#s, id, null, 'external')
  }

  /** Cancels a registration: down at once (reason `left`); false when there was none live. */
  async cancel(id: string): Promise<boolean> {
    const done = await markLeft(this.#sql, this.#s, id, null, 'external')
    if (done) this.#nudge()
    return done
  }

  /**
   * Sets the registry's status override (`UNKNOWN` removes it). The row's status follows the
   * effective registry status — the override, else the status the service reported: `UP` is up,
   * anything else draining (listed, not in service).
   */
  async setStatus(id: string, override: string): Promise<boolean> {
    const rows = await this.#sql`
      update ${this.#s}.members set
        metadata = jsonb_set(metadata, '{eureka,overriddenStatus}', to_jsonb(${override}::text)),
        status = case when (case when ${override} <> 'UNKNOWN' then ${override} else metadata->'eureka'->>'status' end) = 'UP'
                      then 'up' else 'draining' end
      where instance_id = ${id} and status <> 'down' and metadata ? 'eureka'
      returning 1`
    if (rows.length > 0) this.#nudge()
    return rows.length > 0
  }

  /** Merges `entries` into the registration's own metadata (at most 8 KiB in all); false when not live or too large. */
  async mergeMetadata(id: string, entries: Record<string, string>): Promise<boolean> {
    const rows = await this.#sql`
      update ${this.#s}.members set metadata = jsonb_set(metadata, '{eureka,metadata}', coalesce(metadata->'eureka'->'metadata', '{}'::jsonb) || ${this.#sql.json(entries)})
      where instance_id = ${id} and status <> 'down' and metadata ? 'eureka'
        and pg_column_size(coalesce(metadata->'eureka'->'metadata', '{}'::jsonb) || ${this.#sql.json(entries)}) <= ${MAX_METADATA_BYTES}
      returning 1`
    return rows.length > 0
  }

  /**
   * What a registry lists: every live external registration, and every live Chorus member whose
   * lease is current (one that stopped renewing is not offered to clients while peers decide).
   */
  async list(): Promise<WatchedMember[]> {
    const members = await readMembers(this.#sql, this.#s)
    return members.filter((m) => m.status !== 'down' && (m.kind === 'eureka' || !m.expired))
  }

  /**
   * Declares expired registrations down when no Chorus member is alive to do it (members sweep
   * external rows with their own). With a burst, waits one more lease, as members do. Returns the
   * ids declared down.
   */
  async evictExpired(burstRatio: number): Promise<string[]> {
    const members = await readMembers(this.#sql, this.#s)
    if (members.some((m) => m.kind === 'chorus' && m.status !== 'down' && !m.expired)) return []
    const registrations = members.filter((m) => m.kind === 'eureka' && m.status !== 'down')
    const { victims } = declarable(registrations.filter((m) => m.expired), registrations.length, burstRatio)
    if (victims.length === 0) return []
    const marked = await markExpiredDown(this.#sql, this.#s, victims.map((m) => m.instanceId), 'external')
    if (marked.length > 0) this.#nudge()
    return marked
  }

  #nudge(): void {
    this.#bus.notify(channels.members, '')
  }
}
