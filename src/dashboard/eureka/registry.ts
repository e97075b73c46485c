/**
 * The Eureka registry kept in the members table. A registration is a member row (id
 * `<APP>:<instanceId>`, `metadata.eureka` set, no advertise URL so the balancer never routes to it)
 * whose lease is the client's `durationInSecs`; renewals push `expires_at` forward on database time.
 * A client that stops renewing is declared down by the same expiry sweep every Chorus member runs —
 * or, when no Chorus member is alive, by this registry, under the same self-preservation rule.
 * Chorus members themselves are listed to Eureka clients as the application CHORUS.
 */
import type { Logger } from 'pino'
import type { Bus } from '../../bus/bus.js'
import type { Sql } from '../../db/connect.js'
import { schemaName, sequenceName, type SchemaName } from '../../db/schema.js'
import { ChorusError, toError } from '../../errors.js'
import type { Application, RegistryEntry } from './format.js'
import { effectiveStatus, memberId, memberStatusOf, type EurekaStatus, type StoredInstance } from './instance.js'

/** Chorus members appear to Eureka clients under this application name. */
export const CHORUS_APP = 'CHORUS'
const MEMBERS_CHANNEL = 'chorus.members'

interface Row {
  instance_id: string
  status: 'up' | 'draining' | 'down'
  advertise_url: string | null
  metadata: Record<string, unknown>
  fail_after_ms: number
  started_at: Date
  heartbeat_at: Date
}

export class EurekaRegistry {
  readonly #sql: Sql
  readonly #s: SchemaName
  readonly #epochs: string
  readonly #bus: Bus
  readonly #log: Logger
  readonly #burstRatio: number
  #sweepTimer: NodeJS.Timeout | null = null

  constructor(deps: { sql: Sql; schema: string; bus: Bus; log: Logger; burstRatio?: number }) {
    this.#sql = deps.sql
    this.#s = schemaName(deps.sql, deps.schema)
    this.#epochs = sequenceName(deps.schema, 'member_epochs')
    this.#bus = deps.bus
    this.#log = deps.log.child({ subsystem: 'eureka' })
    this.#burstRatio = deps.burstRatio ?? 0.5
  }

  start(sweepEveryMs = 1000): void {
    this.#sweepTimer = setInterval(() => void this.sweep().catch((err: unknown) => this.#log.debug({ err: toError(err) }, 'eureka sweep failed')), sweepEveryMs)
    this.#sweepTimer.unref()
  }

  close(): void {
    if (this.#sweepTimer) clearInterval(this.#sweepTimer)
  }

  /**
   * Registers (or registers again) an instance; its lease starts now. Refused (409) under the
   * application name of the Chorus members, or with the instance id of a live Chorus member
   * (without case): Eureka clients would otherwise be shown a second instance of that name.
   */
  async register(i: StoredInstance): Promise<void> {
    const sql = this.#sql
    const id = memberId(i.app, i.instanceId)
    if (i.app === CHORUS_APP) throw new ChorusError('CHORUS_ERR_DASHBOARD_EUREKA_RESERVED', [CHORUS_APP])
    const clash = await sql<{ instance_id: string }[]>`
      select instance_id from ${this.#s}.members
      where status <> 'down' and not metadata ? 'eureka' and lower(instance_id) in (lower(${i.instanceId}), lower(${id}))
      limit 1`
    if (clash.length > 0) throw new ChorusError('CHORUS_ERR_DASHBOARD_EUREKA_CONFLICT', [clash[0]!.instance_id])
    const leaseMs = Math.round(i.durationInSecs * 1000)
    const status = memberStatusOf(effectiveStatus(i))
    const metadata = { eureka: { ...i, registeredAt: Date.now() } }
    // A live registration keeps its epoch (Eureka replaces the lease); a down one starts a new epoch.
    const rows = await sql<{ epoch: string }[]>`
      insert into ${this.#s}.members as m (instance_id, epoch, status, advertise_url, roles, metadata, pid, host, fail_after_ms, expires_at)
      values (${id}, nextval(${this.#epochs}::regclass), ${status}, null, '{}', ${sql.json(metadata as never)}, null, ${i.hostName}, ${leaseMs},
              now() + ${leaseMs} * interval '1 millisecond')
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
    if (rows.length === 0) throw new ChorusError('CHORUS_ERR_DASHBOARD_EUREKA_CONFLICT', [id])
    this.#log.info({ id, leaseSec: i.durationInSecs }, 'eureka: registered')
    this.#nudge()
  }

  /** Renews the lease; false when there is no such live registration (the client registers again). */
  async renew(app: string, instanceId: string): Promise<boolean> {
    const rows = await this.#sql`
      update ${this.#s}.members set heartbeat_at = now(), expires_at = now() + fail_after_ms * interval '1 millisecond'
      where instance_id = ${memberId(app, instanceId)} and status <> 'down' and metadata ? 'eureka'
      returning 1`
    return rows.length > 0
  }

  /** Cancels a registration: the member is down at once (reason `left`). */
  async cancel(app: string, instanceId: string): Promise<boolean> {
    const rows = await this.#sql`
      update ${this.#s}.members set status = 'down', down_at = now(), down_reason = 'left'
      where instance_id = ${memberId(app, instanceId)} and status <> 'down' and metadata ? 'eureka'
      returning 1`
    if (rows.length > 0) {
      this.#log.info({ id: memberId(app, instanceId) }, 'eureka: cancelled')
      this.#nudge()
    }
    return rows.length > 0
  }

  /** Sets (or, with UNKNOWN, removes) the status override; the member row follows the effective status. */
  async setOverride(app: string, instanceId: string, override: EurekaStatus): Promise<boolean> {
    const rows = await this.#sql`
      update ${this.#s}.members set
        metadata = jsonb_set(metadata, '{eureka,overriddenStatus}', to_jsonb(${override}::text)),
        status = case when (case when ${override} <> 'UNKNOWN' then ${override} else metadata->'eureka'->>'status' end) = 'UP'
                      then 'up' else 'draining' end
      where instance_id = ${memberId(app, instanceId)} and status <> 'down' and metadata ? 'eureka'
      returning 1`
    if (rows.length > 0) this.#nudge()
    return rows.length > 0
  }

  /** Merges `entries` into the instance's metadata. */
  async updateMetadata(app: string, instanceId: string, entries: Record<string, string>): Promise<boolean> {
    const rows = await this.#sql`
      update ${this.#s}.members set metadata = jsonb_set(metadata, '{eureka,metadata}', coalesce(metadata->'eureka'->'metadata', '{}'::jsonb) || ${this.#sql.json(entries)})
      where instance_id = ${memberId(app, instanceId)} and status <> 'down' and metadata ? 'eureka'
        and pg_column_size(coalesce(metadata->'eureka'->'metadata', '{}'::jsonb) || ${this.#sql.json(entries)}) <= 8192
      returning 1`
    return rows.length > 0
  }

  /** Every live registration, and the live Chorus members (as CHORUS), grouped by application. */
  async applications(): Promise<Application[]> {
    const rows = await this.#sql<Row[]>`
      select instance_id, status, advertise_url, metadata, fail_after_ms, started_at, heartbeat_at
      from ${this.#s}.members
      where status <> 'down' and (metadata ? 'eureka' or expires_at > now())
      order by instance_id`
    const apps = new Map<string, RegistryEntry[]>()
    // A registration made before a Chorus member of the same id (re)joined never shadows it.
    const members = new Set(rows.filter((r) => !('eureka' in (r.metadata ?? {}))).map((r) => r.instance_id.toLowerCase()))
    for (const r of rows) {
      const entry = toEntry(r)
      if (!entry) continue
      if (entry.stored.app !== CHORUS_APP && members.has(entry.stored.instanceId.toLowerCase())) continue
      let list = apps.get(entry.stored.app)
      if (!list) apps.set(entry.stored.app, (list = []))
      list.push(entry)
    }
    return [...apps.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([name, instances]) => ({ name, instances }))
  }

  /**
   * Declares expired registrations down when no Chorus member is alive to do it. With a burst (more
   * than `burstRatio` of the registrations expired at once, at least two), waits one more lease —
   * the self-preservation rule members apply, for the same reason: a network cut is not N deaths.
   */
  async sweep(): Promise<void> {
    const [live] = await this.#sql<{ n: number }[]>`
      select count(*)::int as n from ${this.#s}.members where status <> 'down' and expires_at > now() and not metadata ? 'eureka'`
    if (live!.n > 0) return
    const rows = await this.#sql<{ instance_id: string; expired: boolean; long_expired: boolean }[]>`
      select instance_id, expires_at < now() as expired, expires_at < now() - fail_after_ms * interval '1 millisecond' as long_expired
      from ${this.#s}.members where status <> 'down' and metadata ? 'eureka'`
    const expired = rows.filter((r) => r.expired)
    if (expired.length === 0) return
    const burst = expired.length >= 2 && expired.length > this.#burstRatio * rows.length
    const victims = (burst ? expired.filter((r) => r.long_expired) : expired).map((r) => r.instance_id)
    if (victims.length === 0) return
    const marked = await this.#sql`
      update ${this.#s}.members set status = 'down', down_at = now(), down_reason = 'expired'
      where instance_id = any(${victims}::text[]) and status <> 'down' and expires_at < now() and metadata ? 'eureka'
      returning 1`
    if (marked.length > 0) {
      this.#log.warn({ down: victims }, 'eureka: declared expired registrations down')
      this.#nudge()
    }
  }

  #nudge(): void {
    this.#bus.publish(MEMBERS_CHANNEL, '').catch(() => undefined)
  }
}

function toEntry(r: Row): RegistryEntry | null {
  const e = r.metadata?.eureka as (StoredInstance & { registeredAt?: number }) | undefined
  if (e && typeof e === 'object') {
    return {
      stored: e,
      registeredAt: new Date(typeof e.registeredAt === 'number' ? e.registeredAt : r.started_at.getTime()),
      lastRenewalAt: r.heartbeat_at,
      lastUpdatedAt: r.heartbeat_at,
    }
  }
  if (!r.advertise_url) return null
  let url: URL
  try {
    url = new URL(r.advertise_url)
  } catch {
    return null
  }
  const secure = url.protocol === 'https:'
  const port = Number(url.port || (secure ? 443 : 80))
  const status: EurekaStatus = r.status === 'up' ? 'UP' : 'OUT_OF_SERVICE'
  return {
    stored: {
      app: CHORUS_APP,
      instanceId: r.instance_id,
      hostName: url.hostname,
      ipAddr: url.hostname,
      port: secure ? 80 : port,
      portEnabled: !secure,
      securePort: secure ? port : 443,
      securePortEnabled: secure,
      vipAddress: 'chorus',
      secureVipAddress: 'chorus',
      status,
      overriddenStatus: 'UNKNOWN',
      homePageUrl: r.advertise_url,
      statusPageUrl: null,
      healthCheckUrl: null,
      dataCenterInfo: { '@class': 'com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo', name: 'MyOwn' },
      renewalIntervalInSecs: Math.max(1, Math.round(r.fail_after_ms / 5000)),
      durationInSecs: Math.max(1, Math.round(r.fail_after_ms / 1000)),
      metadata: {},
      countryId: 1,
      lastDirtyTimestamp: String(r.started_at.getTime()),
    },
    registeredAt: r.started_at,
    lastRenewalAt: r.heartbeat_at,
    lastUpdatedAt: r.heartbeat_at,
  }
}
