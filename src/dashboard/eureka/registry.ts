/**
 * The Eureka registry, kept by membership: a registration is an external member (see
 * src/membership/external.ts) whose lease is the client's `durationInSecs`. A client that stops
 * renewing is declared down by the same expiry sweep every Chorus member runs — or, when no Chorus
 * member is alive, by this registry's sweep, under the same self-preservation rule. Chorus members
 * themselves are listed to Eureka clients as the application CHORUS. This file speaks Eureka
 * (names, statuses, the registry's shape); it writes nothing itself.
 */
import type { Logger } from 'pino'
import type { Bus } from '../../bus/bus.js'
import type { Sql } from '../../db/connect.js'
import { ChorusError, toError } from '../../errors.js'
import { ExternalMembers } from '../../membership/external.js'
import type { WatchedMember } from '../../membership/reader.js'
import type { Application, RegistryEntry } from './format.js'
import { effectiveStatus, memberId, memberStatusOf, type EurekaStatus, type StoredInstance } from './instance.js'

/** Chorus members appear to Eureka clients under this application name. */
export const CHORUS_APP = 'CHORUS'

export class EurekaRegistry {
  readonly #members: ExternalMembers
  readonly #log: Logger
  readonly #burstRatio: number
  #sweepTimer: NodeJS.Timeout | null = null

  constructor(deps: { sql: Sql; schema: string; bus: Bus; log: Logger; burstRatio?: number }) {
    this.#log = deps.log.child({ subsystem: 'eureka' })
    this.#members = new ExternalMembers({ sql: deps.sql, schema: deps.schema, bus: deps.bus, log: this.#log })
    this.#burstRatio = deps.burstRatio ?? 0.5
  }

  start(sweepEveryMs = 1000): void {
    this.#sweepTimer = setInterval(() => void this.sweep().catch((err: unknown) => this.#log.debug({ err: toError(err) }, 'sweep failed')), sweepEveryMs)
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
    const id = memberId(i.app, i.instanceId)
    if (i.app === CHORUS_APP) throw new ChorusError('CHORUS_ERR_DASHBOARD_EUREKA_RESERVED', [CHORUS_APP])
    const heldBy = await this.#members.register({
      id,
      reservedFor: [i.instanceId, id],
      status: memberStatusOf(effectiveStatus(i)),
      host: i.hostName,
      leaseMs: Math.round(i.durationInSecs * 1000),
      document: { ...i },
    })
    if (heldBy !== null) throw new ChorusError('CHORUS_ERR_DASHBOARD_EUREKA_CONFLICT', [heldBy])
    this.#log.info({ id, leaseSec: i.durationInSecs }, 'registered')
  }

  /** Renews the lease; false when there is no such live registration (the client registers again). */
  renew(app: string, instanceId: string): Promise<boolean> {
    return this.#members.renew(memberId(app, instanceId))
  }

  /** Cancels a registration: the member is down at once (reason `left`). */
  async cancel(app: string, instanceId: string): Promise<boolean> {
    const cancelled = await this.#members.cancel(memberId(app, instanceId))
    if (cancelled) this.#log.info({ id: memberId(app, instanceId) }, 'cancelled')
    return cancelled
  }

  /** Sets (or, with UNKNOWN, removes) the status override; the member row follows the effective status. */
  setOverride(app: string, instanceId: string, override: EurekaStatus): Promise<boolean> {
    return this.#members.setStatus(memberId(app, instanceId), override)
  }

  /** Merges `entries` into the instance's metadata. */
  updateMetadata(app: string, instanceId: string, entries: Record<string, string>): Promise<boolean> {
    return this.#members.mergeMetadata(memberId(app, instanceId), entries)
  }

  /** Every live registration, and the live Chorus members (as CHORUS), grouped by application. */
  async applications(): Promise<Application[]> {
    const rows = await this.#members.list()
    const apps = new Map<string, RegistryEntry[]>()
    // A registration made before a Chorus member of the same id (re)joined never shadows it.
    const members = new Set(rows.filter((r) => r.kind === 'chorus').map((r) => r.instanceId.toLowerCase()))
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

  /** Declares expired registrations down when no Chorus member is alive to do it (see ExternalMembers.evictExpired). */
  async sweep(): Promise<void> {
    const down = await this.#members.evictExpired(this.#burstRatio)
    if (down.length > 0) this.#log.warn({ down }, 'declared expired registrations down')
  }
}

function toEntry(r: WatchedMember): RegistryEntry | null {
  const e = r.metadata?.eureka as (StoredInstance & { registeredAt?: number }) | undefined
  if (e && typeof e === 'object') {
    return {
      stored: e,
      registeredAt: new Date(typeof e.registeredAt === 'number' ? e.registeredAt : r.startedAt.getTime()),
      lastRenewalAt: r.heartbeatAt,
      lastUpdatedAt: r.heartbeatAt,
    }
  }
  if (!r.advertiseUrl) return null
  let url: URL
  try {
    url = new URL(r.advertiseUrl)
  } catch {
    return null
  }
  const secure = url.protocol === 'https:'
  const port = Number(url.port || (secure ? 443 : 80))
  const status: EurekaStatus = r.status === 'up' ? 'UP' : 'OUT_OF_SERVICE'
  return {
    stored: {
      app: CHORUS_APP,
      instanceId: r.instanceId,
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
      homePageUrl: r.advertiseUrl,
      statusPageUrl: null,
      healthCheckUrl: null,
      dataCenterInfo: { '@class': 'com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo', name: 'MyOwn' },
      renewalIntervalInSecs: Math.max(1, Math.round(r.failAfterMs / 5000)),
      durationInSecs: Math.max(1, Math.round(r.failAfterMs / 1000)),
      metadata: {},
      countryId: 1,
      lastDirtyTimestamp: String(r.startedAt.getTime()),
    },
    registeredAt: r.startedAt,
    lastRenewalAt: r.heartbeatAt,
    lastUpdatedAt: r.heartbeatAt,
  }
}
