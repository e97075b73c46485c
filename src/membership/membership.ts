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
import type { Events, Listener, MemberInfo } from '../events.js'
import type { ResolvedOptions } from '../options.js'
import { Machine } from '../util/machine.js'
import { channels } from '../bus/channels.js'
import { holderOf, insertSelf, markDraining, markLeft, renewLease } from './writes.js'
import { emitTransitions } from './transitions.js'
import { ExpirySweep } from './sweep.js'
import { readMembers, toInfo, type WatchedMember } from './rows.js'

/**
 * States of this instance's membership, and where each may be entered from:
 * - `joining`: not yet in the table (the initial state).
 * - `up`: renewing, eligible for work (after joining, or rejoining from isolation).
 * - `draining`: renewing, finishing work, takes no new work (from up; or joined or rejoined draining).
 * - `isolated`: could not renew in time (or was declared down); its signal is aborted; rejoining.
 * - `left`: gone for good (after `leave()` or `abandon()`). Final.
 */
const enteredFrom = {
  joining: [],
  up: ['joining', 'isolated'],
  draining: ['joining', 'up', 'isolated'],
  isolated: ['up', 'draining'],
  left: ['joining', 'up', 'draining', 'isolated'],
} as const
export type SelfState = keyof typeof enteredFrom

/** Membership's state machine, starting `joining` (exported so its edges can be tested alone). */
export function membershipMachine(onChange?: (from: SelfState, to: SelfState) => void): Machine<SelfState> {
  return new Machine<SelfState>('membership', enteredFrom, 'joining', onChange)
}

export interface SelfInfo {
  readonly instanceId: string
  readonly epoch: number
  readonly state: SelfState
  readonly advertiseUrl: string | null
  readonly roles: readonly string[]
  /** Aborted when this instance stops being a member (isolated or left); a new one per epoch. */
  readonly signal: AbortSignal
}

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
  readonly #machine: Machine<SelfState>
  readonly #sweep: ExpirySweep
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
    this.#sweep = new ExpirySweep({ selfId: deps.options.instanceId, burstRatio: deps.options.burstRatio, events: deps.events, log: this.#log })
    this.#machine = membershipMachine((from, to) => this.#log.debug({ from, to }, 'membership state'))
  }

  get #state(): SelfState {
    return this.#machine.state
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
    this.#unsubscribe = this.#bus.subscribe(channels.members, () => this.#queueRefresh())
    await this.#join(null)
    await this.#serialize(() => this.#refresh())
    this.#scheduleTick(this.#opts.heartbeatMs)
  }

  /** Marks this instance draining: peers and the balancer stop sending it new work. */
  async drain(): Promise<void> {
    this.#wantDraining = true
    if (this.#state !== 'up') return
    await markDraining(this.#control, this.#s, this.#opts.instanceId, this.#epoch)
    // Isolated or left meanwhile: that state stands (a rejoin comes back draining).
    if (!this.#machine.is('up')) return
    this.#machine.to('draining')
    this.#nudge()
    await this.#serialize(() => this.#refresh())
  }

  /** Leaves the cluster: the row is marked down at once, so peers need not wait for expiry. */
  async leave(): Promise<void> {
    if (this.#state === 'left') return
    const wasMember = this.#state === 'up' || this.#state === 'draining'
    this.#stopTimers()
    this.#machine.to('left')
    this.#controller.abort(new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', ['closing', 'work under this membership']))
    if (wasMember) {
      try {
        await markLeft(this.#control, this.#s, this.#opts.instanceId, this.#epoch, 'any')
        this.#nudge()
        this.#log.info({ instanceId: this.#opts.instanceId, epoch: this.#epoch }, 'left the cluster')
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
    this.#machine.to('left')
    this.#controller.abort(new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', ['closing', 'work under this membership']))
    this.#unsubscribe?.()
    void this.#control.end({ timeout: 0 }).catch(() => undefined)
  }

  // ---- state ---------------------------------------------------------------------------------

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
    const epoch = await insertSelf(this.#control, this.#s, this.#epochs, o, status, previousEpoch ?? takeOver ?? -1)
    if (epoch === null) {
      const other = await holderOf(this.#control, this.#s, o.instanceId)
      if (takeOver === null && other && other.host === hostname() && other.pid && other.pid !== process.pid && !processAlive(other.pid)) {
        this.#log.warn({ previousPid: other.pid, previousEpoch: other.epoch }, 'the previous process with this instance id on this host is gone; taking its place')
        return this.#join(previousEpoch, Number(other.epoch))
      }
      throw new ChorusError('CHORUS_ERR_MEMBERSHIP_DUPLICATE_ID', [o.instanceId, other?.epoch ?? '?', `host ${other?.host ?? '?'}, pid ${other?.pid ?? '?'}`], {
        details: { instanceId: o.instanceId },
      })
    }
    // Left while the join was on its way: the new row is not ours to keep; it expires as after a kill.
    if (this.#machine.is('left')) return
    this.#epoch = epoch
    if (this.#controller.signal.aborted) this.#controller = signalController()
    this.#machine.to(status)
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
    this.#machine.to('isolated')
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
        this.#log.warn({ err: toError(err), state: this.#state }, 'database unreachable')
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
    const renewed = await renewLease(control, this.#s, this.#opts.instanceId, this.#epoch, 'any')
    if (this.#state !== 'up' && this.#state !== 'draining') return
    if (!renewed) {
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
    this.#bus.notify(channels.members, '')
  }

  /** Reads the table, declares expired members down, and emits the differences as events. */
  async #refresh(): Promise<void> {
    const control = this.#control
    const read = await readMembers(control, this.#s)
    const { rows, marked } = await this.#sweep.run(control, this.#s, read, this.#state === 'up' || this.#state === 'draining')
    if (marked.length > 0) this.#nudge()
    this.#apply(rows)
    this.#watchExpiry(rows)
  }

  /** Checks again the moment the next peer's lease runs out, so a dead peer is seen down at its expiry, not a tick later. */
  #watchExpiry(rows: readonly WatchedMember[]): void {
    if (this.#expiryTimer) clearTimeout(this.#expiryTimer)
    this.#expiryTimer = null
    let soonest = Number.POSITIVE_INFINITY
    for (const r of rows) {
      if (r.status !== 'down' && r.instanceId !== this.#opts.instanceId && r.expiresInMs > 0) soonest = Math.min(soonest, r.expiresInMs)
    }
    if (!Number.isFinite(soonest) || soonest > this.#opts.heartbeatMs) return
    this.#expiryTimer = setTimeout(() => this.#queueRefresh(), soonest + 15)
    this.#expiryTimer.unref()
  }

  #apply(rows: readonly WatchedMember[]): void {
    const next = new Map<string, MemberInfo>()
    for (const r of rows) next.set(r.instanceId, toInfo(r))
    const prev = this.#view
    this.#view = next
    emitTransitions(prev, next, (event, payload) => this.#events.emit(event, payload))
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
