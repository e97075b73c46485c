/**
 * Membership: the one liveness view every subsystem trusts. Each instance owns one row; it renews
 * a lease on database time (`expires_at = now() + failAfter`), and any live instance declares
 * expired rows down. An instance that cannot renew for `failAfter - fenceMargin` (its own clock,
 * measured from when the last successful renewal was *sent*) isolates itself — aborting the signal
 * it handed to dependents — strictly before peers may declare it down, then rejoins with a new
 * epoch when the database answers again.
 */
import { setMaxListeners } from 'node:events'
import { hostname } from 'node:os'
import { performance } from 'node:perf_hooks'
import type { Logger } from 'pino'
import type { Bus } from '../bus/bus.js'
import { reconnectDelayMs } from '../db/backoff.js'
import type { Db, Sql } from '../db/connect.js'
import { schemaName, sequenceName, type SchemaName } from '../db/schema.js'
import { ChorusError, isChorusError, toError } from '../errors.js'
import { processAlive } from '../processes.js'
import type { ClusterEvents, Events, Listener, MemberInfo, MemberStatus } from '../events.js'
import type { ResolvedOptions } from '../options.js'

/**
 * States of this instance's membership:
 * - `joining`: not yet in the table.
 * - `up`: renewing, eligible for work.
 * - `draining`: renewing, finishing work, takes no new work.
 * - `isolated`: could not renew in time (or was declared down); its signal is aborted; rejoining.
 * - `left`: gone for good (after `leave()`).
 */
export type SelfState = 'joining' | 'up' | 'draining' | 'isolated' | 'left'

export interface SelfInfo {
  readonly instanceId: string
  readonly epoch: number
  readonly state: SelfState
  readonly advertiseUrl: string | null
  readonly roles: readonly string[]
  /** Aborted when this instance stops being a member (isolated or left); a new one per epoch. */
  readonly signal: AbortSignal
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
  down_reason: string | null
  age_ms: number
  expires_in_ms: number
  expired: boolean
  long_expired: boolean
}

const CHANNEL = 'chorus.members'
/** Down members stay in the view (for dashboards and late readers) this long. */
const KEEP_DOWN = '10 minutes'

type MemberEvent = 'member:up' | 'member:draining' | 'member:down' | 'member:self:isolated' | 'member:self:rejoined'

export class Membership {
  readonly #db: Db
  readonly #bus: Bus
  readonly #events: Events
  readonly #log: Logger
  readonly #opts: ResolvedOptions
  #control: Sql
  readonly #s: SchemaName
  readonly #epochs: string
  #state: SelfState = 'joining'
  #epoch = 0
  #controller = signalController()
  #view = new Map<string, MemberInfo>()
  #tickTimer: NodeJS.Timeout | null = null
  #ticking = false
  #tickAgain = false
  #fenceTimer: NodeJS.Timeout | null = null
  #expiryTimer: NodeJS.Timeout | null = null
  #serial: Promise<unknown> = Promise.resolve()
  #refreshQueued = false
  #burstLogged = false
  #lastErrorLog = 0
  #wantDraining = false
  /** performance.now() when the last successful renewal was sent; null before the first. */
  #renewedAt: number | null = null
  /** Failed rejoin attempts in a row while isolated, for the reconnect backoff. */
  #rejoinAttempts = 0
  #unsubscribe: (() => void) | null = null

  constructor(deps: { db: Db; bus: Bus; events: Events; log: Logger; options: ResolvedOptions }) {
    this.#db = deps.db
    this.#bus = deps.bus
    this.#events = deps.events
    this.#log = deps.log.child({ subsystem: 'membership' })
    this.#opts = deps.options
    this.#control = this.#db.open('control', 1)
    this.#s = schemaName(this.#control, this.#db.schema)
    this.#epochs = sequenceName(this.#db.schema, 'member_epochs')
  }

  get self(): SelfInfo {
    return {
      instanceId: this.#opts.instanceId,
      epoch: this.#epoch,
      state: this.#state,
      advertiseUrl: this.#opts.advertiseUrl,
      roles: this.#opts.roles,
      signal: this.#controller.signal,
    }
  }

  /** Milliseconds since the last renewal that the database acknowledged (sent time); null before joining. */
  get sinceContactMs(): number | null {
    return this.#renewedAt === null ? null : performance.now() - this.#renewedAt
  }

  /** Aborted when this instance stops being a member; read it again after a rejoin. */
  get signal(): AbortSignal {
    return this.#controller.signal
  }

  /** Live members (up and draining), this instance included, sorted by id. */
  list(): MemberInfo[] {
    return [...this.#view.values()].filter((m) => m.status !== 'down').sort((a, b) => a.instanceId.localeCompare(b.instanceId))
  }

  /** Live members and those down in the last ten minutes. */
  all(): MemberInfo[] {
    return [...this.#view.values()].sort((a, b) => a.instanceId.localeCompare(b.instanceId))
  }

  get(instanceId: string): MemberInfo | undefined {
    return this.#view.get(instanceId)
  }

  /** True when the member is live in the current view under this epoch. */
  isLive(instanceId: string, epoch?: number): boolean {
    const m = this.#view.get(instanceId)
    return !!m && m.status !== 'down' && (epoch === undefined || m.epoch === epoch)
  }

  on<E extends MemberEvent>(event: E, listener: Listener<E>): () => void {
    return this.#events.on(event, listener)
  }

  async join(): Promise<void> {
    this.#unsubscribe = this.#bus.subscribe(CHANNEL, () => this.#queueRefresh())
    await this.#join(null)
    await this.#serialize(() => this.#refresh())
    this.#scheduleTick(this.#opts.heartbeatMs)
  }

  /** Marks this instance draining: peers and the balancer stop sending it new work. */
  async drain(): Promise<void> {
    this.#wantDraining = true
    if (this.#state !== 'up') return
    await this.#control`update ${this.#s}.members set status = 'draining' where instance_id = ${this.#opts.instanceId} and epoch = ${this.#epoch} and status = 'up'`
    this.#setState('draining')
    this.#nudge()
    await this.#serialize(() => this.#refresh())
  }

  /** Leaves the cluster: the row is marked down at once, so peers need not wait for expiry. */
  async leave(): Promise<void> {
    if (this.#state === 'left') return
    const wasMember = this.#state === 'up' || this.#state === 'draining'
    this.#stopTimers()
    this.#setState('left')
    this.#controller.abort(new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', ['closing', 'work under this membership']))
    if (wasMember) {
      try {
        await this.#control`
          update ${this.#s}.members set status = 'down', down_at = now(), down_reason = 'left'
          where instance_id = ${this.#opts.instanceId} and epoch = ${this.#epoch}`
        this.#nudge()
      } catch (err) {
        this.#log.warn({ err: toError(err) }, 'could not mark this instance down on leave; peers will see it expire')
      }
    }
    this.#unsubscribe?.()
    await this.#control.end({ timeout: 1 }).catch(() => undefined)
  }

  /**
   * Stops every timer without a word to the database: used when `close()` ran out of time. Peers
   * see this instance expire, as after a kill; the signal aborts first, so exclusive work stops.
   */
  abandon(): void {
    if (this.#state === 'left') return
    this.#stopTimers()
    this.#setState('left')
    this.#controller.abort(new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', ['closing', 'work under this membership']))
    this.#unsubscribe?.()
    void this.#control.end({ timeout: 0 }).catch(() => undefined)
  }

  // ---- state ---------------------------------------------------------------------------------

  #setState(next: SelfState): void {
    const prev = this.#state
    if (prev === next) return
    switch (next) {
      case 'joining':
      case 'up':
      case 'draining':
      case 'isolated':
      case 'left':
        break
      default: {
        const never: never = next
        throw new Error(`unknown state ${String(never)}`)
      }
    }
    this.#state = next
    this.#log.debug({ from: prev, to: next }, 'membership state')
  }

  /**
   * Inserts or takes over this instance's row. `takeOver` names the epoch of a previous holder on
   * this host whose process is gone (a restart quicker than failAfter), which may be replaced at once.
   */
  async #join(previousEpoch: number | null, takeOver: number | null = null): Promise<void> {
    const o = this.#opts
    const status = this.#wantDraining ? 'draining' : 'up'
    // A rejoin runs on a fresh control client: connect it first, so that the fence window starts
    // when the join is sent, not while the connection was being set up.
    if (previousEpoch !== null) await this.#control`select 1`
    const sentAt = performance.now()
    const rows = await this.#control<{ epoch: string }[]>`
      insert into ${this.#s}.members as m (instance_id, epoch, status, advertise_url, roles, metadata, pid, host, fail_after_ms, expires_at)
      values (${o.instanceId}, nextval(${this.#epochs}::regclass), ${status}, ${o.advertiseUrl}, ${o.roles as string[]},
              ${this.#control.json(o.metadata as never)}, ${process.pid}, ${hostname()}, ${o.failAfterMs},
              now() + ${o.failAfterMs} * interval '1 millisecond')
      on conflict (instance_id) do update set
        epoch = excluded.epoch, status = excluded.status, advertise_url = excluded.advertise_url,
        roles = excluded.roles, metadata = excluded.metadata, pid = excluded.pid, host = excluded.host,
        fail_after_ms = excluded.fail_after_ms, started_at = now(), heartbeat_at = now(),
        expires_at = excluded.expires_at, down_at = null, down_reason = null
      where m.status = 'down' or m.expires_at < now() or m.epoch = ${previousEpoch ?? takeOver ?? -1}
      returning epoch`
    if (rows.length === 0) {
      const [other] = await this.#control<{ epoch: string; host: string | null; pid: number | null }[]>`
        select epoch, host, pid from ${this.#s}.members where instance_id = ${o.instanceId}`
      if (takeOver === null && other && other.host === hostname() && other.pid && other.pid !== process.pid && !processAlive(other.pid)) {
        this.#log.warn({ previousPid: other.pid, previousEpoch: other.epoch }, 'the previous process with this instance id on this host is gone; taking its place')
        return this.#join(previousEpoch, Number(other.epoch))
      }
      throw new ChorusError('CHORUS_ERR_MEMBERSHIP_DUPLICATE_ID', [o.instanceId, other?.epoch ?? '?', `host ${other?.host ?? '?'}, pid ${other?.pid ?? '?'}`], {
        details: { instanceId: o.instanceId },
      })
    }
    this.#epoch = Number(rows[0]!.epoch)
    if (this.#controller.signal.aborted) this.#controller = signalController()
    this.#setState(status)
    this.#renewed(sentAt)
    this.#nudge()
    if (previousEpoch !== null) {
      this.#log.warn({ previousEpoch, epoch: this.#epoch }, 'rejoined the cluster with a new epoch')
      this.#events.emit('member:self:rejoined', { previousEpoch, epoch: this.#epoch })
    } else {
      this.#log.info({ instanceId: o.instanceId, epoch: this.#epoch }, 'joined the cluster')
    }
  }

  /** A renewal sent at `sentAt` succeeded: peers cannot declare us down before sentAt + failAfter. */
  #renewed(sentAt: number): void {
    this.#renewedAt = sentAt
    if (this.#fenceTimer) clearTimeout(this.#fenceTimer)
    const safeFor = this.#opts.failAfterMs - this.#opts.fenceMarginMs - (performance.now() - sentAt)
    this.#fenceTimer = setTimeout(() => this.#isolate('renewal overdue'), Math.max(0, safeFor))
    this.#fenceTimer.unref()
  }

  #isolate(why: string): void {
    if (this.#state !== 'up' && this.#state !== 'draining') return
    if (this.#fenceTimer) clearTimeout(this.#fenceTimer)
    this.#fenceTimer = null
    this.#setState('isolated')
    const silentForMs = this.#opts.failAfterMs - this.#opts.fenceMarginMs
    this.#controller.abort(new ChorusError('CHORUS_ERR_MEMBERSHIP_ISOLATED', ['work under the previous epoch']))
    this.#log.error({ epoch: this.#epoch, why }, 'isolated: stopped exclusive work; will rejoin with a new epoch when the database answers')
    this.#events.emit('member:self:isolated', { epoch: this.#epoch, silentForMs })
    // A hung query would otherwise hold the only control connection forever.
    const old = this.#control
    this.#control = this.#db.open('control', 1)
    void old.end({ timeout: 0 }).catch(() => undefined)
    this.#scheduleTick(0)
  }

  // ---- the tick ------------------------------------------------------------------------------

  #scheduleTick(delay: number): void {
    if (this.#state === 'left') return
    if (this.#tickTimer) clearTimeout(this.#tickTimer)
    this.#tickTimer = setTimeout(() => void this.#tick(), delay)
    this.#tickTimer.unref()
  }

  async #tick(): Promise<void> {
    // One tick at a time: a tick hung on a dead connection must not run beside a newer one, or two
    // joins race (the loser reports its own row as a duplicate, a late winner bumps the epoch again).
    if (this.#ticking) {
      this.#tickAgain = true
      return
    }
    this.#ticking = true
    this.#tickAgain = false
    const started = performance.now()
    try {
      if (this.#state === 'isolated') await this.#join(this.#epoch)
      else if (this.#state === 'up' || this.#state === 'draining') await this.#heartbeat()
      if (this.#state === 'up' || this.#state === 'draining') await this.#serialize(() => this.#refresh())
    } catch (err) {
      if (isChorusError(err, 'CHORUS_ERR_MEMBERSHIP_DUPLICATE_ID')) {
        this.#log.error({ err }, 'cannot rejoin: another live instance took this instance id')
      } else if (performance.now() - this.#lastErrorLog > 2000) {
        this.#lastErrorLog = performance.now()
        this.#log.warn({ err: toError(err), state: this.#state }, 'membership: database unreachable')
      }
    } finally {
      this.#ticking = false
      // While isolated, rejoin on the reconnect backoff (not a whole heartbeat apart), so the
      // instance is a member again within about a second of the database answering.
      const isolated = this.#state === 'isolated'
      this.#rejoinAttempts = isolated ? this.#rejoinAttempts + 1 : 0
      const every = isolated ? Math.min(this.#opts.heartbeatMs, reconnectDelayMs(this.#rejoinAttempts)) : this.#opts.heartbeatMs
      this.#scheduleTick(this.#tickAgain ? 0 : Math.max(0, every - (performance.now() - started)))
    }
  }

  async #heartbeat(): Promise<void> {
    const sentAt = performance.now()
    const control = this.#control
    const rows = await control<{ status: MemberStatus }[]>`
      update ${this.#s}.members set heartbeat_at = now(), expires_at = now() + fail_after_ms * interval '1 millisecond'
      where instance_id = ${this.#opts.instanceId} and epoch = ${this.#epoch} and status <> 'down'
      returning status`
    if (this.#state !== 'up' && this.#state !== 'draining') return
    if (rows.length === 0) {
      this.#isolate('declared down by the cluster')
      return
    }
    this.#renewed(sentAt)
  }

  #serialize<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#serial.then(fn, fn)
    this.#serial = next.catch(() => undefined)
    return next
  }

  #queueRefresh(): void {
    if (this.#refreshQueued || this.#state === 'left' || this.#state === 'joining') return
    this.#refreshQueued = true
    void this.#serialize(async () => {
      this.#refreshQueued = false
      await this.#refresh()
    }).catch(() => undefined)
  }

  #nudge(): void {
    void this.#bus.publish(CHANNEL, '')
  }

  /** Reads the table, declares expired members down, and emits the differences as events. */
  async #refresh(): Promise<void> {
    const control = this.#control
    let rows: Row[] = await control<Row[]>`
      select instance_id, epoch, status, advertise_url, roles, metadata, pid, host, started_at, heartbeat_at, down_reason,
             (extract(epoch from now() - heartbeat_at) * 1000)::float8 as age_ms,
             (extract(epoch from expires_at - now()) * 1000)::float8 as expires_in_ms,
             expires_at < now() as expired,
             expires_at < now() - fail_after_ms * interval '1 millisecond' as long_expired
      from ${this.#s}.members
      where status <> 'down' or down_at > now() - ${KEEP_DOWN}::interval`
    const live = rows.filter((r) => r.status !== 'down')
    const expired = live.filter((r) => r.expired && r.instance_id !== this.#opts.instanceId)
    if (expired.length > 0 && (this.#state === 'up' || this.#state === 'draining')) {
      const others = live.length - 1
      const burst = expired.length >= 2 && expired.length > this.#opts.burstRatio * others
      let victims = expired
      if (burst) {
        victims = expired.filter((r) => r.long_expired)
        if (!this.#burstLogged) {
          this.#burstLogged = true
          const ids = expired.map((r) => r.instance_id)
          this.#log.error(
            { expired: ids, live: live.length },
            `SELF-PRESERVATION: ${ids.length} of ${others} other members expired at once; waiting one more failAfter before declaring them down`,
          )
          this.#events.emit('member:burst:suspected', { expired: ids, live: live.length })
        }
      } else {
        this.#burstLogged = false
      }
      if (victims.length > 0) {
        const marked = await control<{ instance_id: string }[]>`
          update ${this.#s}.members set status = 'down', down_at = now(), down_reason = 'expired'
          where instance_id = any(${victims.map((v) => v.instance_id)}::text[])
            and status <> 'down' and expires_at < now()
          returning instance_id`
        if (marked.length > 0) {
          this.#log.warn({ down: marked.map((m) => m.instance_id) }, 'declared expired members down')
          this.#nudge()
          const downIds = new Set(marked.map((m) => m.instance_id))
          rows = rows.map((r) => (downIds.has(r.instance_id) ? { ...r, status: 'down', down_reason: 'expired' } : r))
        }
      }
    } else if (expired.length === 0) {
      this.#burstLogged = false
    }
    this.#apply(rows)
    this.#watchExpiry(rows)
  }

  /** Checks again the moment the next peer's lease runs out, so a dead peer is seen down at its expiry, not a tick later. */
  #watchExpiry(rows: Row[]): void {
    if (this.#expiryTimer) clearTimeout(this.#expiryTimer)
    this.#expiryTimer = null
    let soonest = Number.POSITIVE_INFINITY
    for (const r of rows) {
      if (r.status !== 'down' && r.instance_id !== this.#opts.instanceId && r.expires_in_ms > 0) soonest = Math.min(soonest, r.expires_in_ms)
    }
    if (!Number.isFinite(soonest) || soonest > this.#opts.heartbeatMs) return
    this.#expiryTimer = setTimeout(() => this.#queueRefresh(), soonest + 15)
    this.#expiryTimer.unref()
  }

  #apply(rows: Row[]): void {
    const next = new Map<string, MemberInfo>()
    for (const r of rows) next.set(r.instance_id, toInfo(r))
    const prev = this.#view
    this.#view = next
    const emit = <E extends keyof ClusterEvents>(event: E, payload: ClusterEvents[E]) => this.#events.emit(event, payload)
    for (const [id, m] of next) {
      const old = prev.get(id)
      if (old && old.epoch !== m.epoch && old.status !== 'down') {
        emit('member:down', { member: { ...old, status: 'down' }, reason: 'restarted' })
      }
      const oldStatus = old && old.epoch === m.epoch ? old.status : undefined
      if (oldStatus === m.status) continue
      if (m.status === 'up') emit('member:up', { member: m })
      else if (m.status === 'draining') {
        if (oldStatus === undefined) emit('member:up', { member: m })
        emit('member:draining', { member: m })
      } else if (oldStatus !== undefined) {
        emit('member:down', { member: m, reason: m.downReason === 'left' ? 'left' : 'expired' })
      }
    }
    for (const [id, old] of prev) {
      if (!next.has(id) && old.status !== 'down') emit('member:down', { member: { ...old, status: 'down' }, reason: 'expired' })
    }
  }

  #stopTimers(): void {
    if (this.#tickTimer) clearTimeout(this.#tickTimer)
    if (this.#fenceTimer) clearTimeout(this.#fenceTimer)
    if (this.#expiryTimer) clearTimeout(this.#expiryTimer)
    this.#expiryTimer = null
    this.#tickTimer = null
    this.#fenceTimer = null
  }
}

/** A controller for the membership signal, which every held lock listens on: no listener limit (Node warns past 10). */
function signalController(): AbortController {
  const c = new AbortController()
  setMaxListeners(0, c.signal)
  return c
}

function toInfo(r: Row): MemberInfo {
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
  }
}
