/**
 * Singletons: work that must run on exactly one live instance. A lease row per name names its
 * holder's instance id and epoch; it is valid while that epoch is live (membership's `live_members`), so
 * takeover needs no expiry of its own: when the holder is declared down (and, by self-fencing, has
 * already aborted its signal), leaves, or drains and releases, another eligible instance acquires
 * it and calls `start`.
 */
import type { Logger } from 'pino'
import type { Bus } from '../bus/bus.js'
import { channels } from '../bus/channels.js'
import { reconnectDelayMs } from '../db/backoff.js'
import type { Sql } from '../db/connect.js'
import { schemaName, type SchemaName } from '../db/schema.js'
import { ChorusError, toError } from '../errors.js'
import type { Events } from '../events.js'
import type { Membership } from '../membership/membership.js'
import type { Subsystem, SubsystemDeps } from '../subsystem.js'
import { untilAborted } from '../util/abort.js'
import { Machine, type Transitions } from '../util/machine.js'
import { checkName, drainGraceMs, SAFETY_POLL_MS } from './limits.js'
import { checkOptions, singletonOptions } from './options.js'
import { acquireLease } from './sql/acquireLease.js'
import { leaseHolders } from './sql/leaseHolders.js'
import { releaseLease } from './sql/releaseLease.js'
import type { SingletonOptions } from './types.js'

/**
 * A singleton's states on this instance, and the states each may be entered from:
 * - `idle`: not held here; acquired when the lease is free.
 * - `acquiring`: a lease write is in flight.
 * - `held`: this instance holds the lease and `start` was called.
 * - `stopping`: the signal was aborted; waiting for `start` to settle, then releasing.
 * - `closed`: unregistered, or the instance is draining or closed; it stays closed.
 */
export const leaseEnteredFrom = {
  idle: ['acquiring', 'stopping'],
  acquiring: ['idle'],
  held: ['acquiring'],
  stopping: ['held'],
  closed: ['idle', 'stopping'],
} as const satisfies Transitions<LeaseState>

export type LeaseState = 'idle' | 'acquiring' | 'held' | 'stopping' | 'closed'

/** The state machine of singleton `name` on this instance (exported for its unit test). */
export function leaseMachine(name: string): Machine<LeaseState> {
  return new Machine<LeaseState>(`singleton ${name}`, leaseEnteredFrom, 'idle')
}

/** First delay before acquiring again after `start` threw; doubles up to a minute. */
const RETRY_AFTER_FAILURE_MS = 1000

interface Entry {
  readonly name: string
  readonly start: (signal: AbortSignal) => unknown
  readonly eligible: boolean
  readonly state: Machine<LeaseState>
  controller: AbortController | null
  epoch: number
  fence: number
  running: Promise<void> | null
  failures: number
  retryAt: number
  /** Lease writes that failed in a row (the database did not answer); the next try backs off on it. */
  leaseFailures: number
  leaseRetry: NodeJS.Timeout | null
}

/** A registered singleton, as seen from this instance. */
export interface Singleton {
  readonly name: string
  /** True while this instance holds it (its `start` was called and its signal is not aborted). */
  readonly held: boolean
  /** Stops it here (releasing the lease to another instance) and stops competing for it. */
  close(): Promise<void>
}

export class Singletons implements Subsystem {
  readonly #drainGraceMs: number
  readonly name = 'singletons'
  readonly #sql: Sql
  readonly #s: SchemaName
  readonly #bus: Bus
  readonly #events: Events
  readonly #log: Logger
  readonly #members: Membership
  readonly #instanceId: string
  readonly #roles: readonly string[]
  readonly #entries = new Map<string, Entry>()
  readonly #offs: (() => void)[] = []
  #open = true
  #pollTimer: NodeJS.Timeout | null = null
  #signal: AbortSignal | null = null

  constructor(deps: SubsystemDeps) {
    this.#sql = deps.db.sql
    this.#s = schemaName(deps.db.sql, deps.db.schema)
    this.#bus = deps.bus
    this.#events = deps.events
    this.#log = deps.log.child({ subsystem: 'singleton' })
    this.#members = deps.members
    this.#instanceId = deps.options.instanceId
    this.#roles = deps.options.roles
    this.#drainGraceMs = drainGraceMs(deps.options.closeTimeoutMs)
  }

  register(name: string, opts: SingletonOptions): Singleton {
    checkName('CHORUS_ERR_SINGLETON_NAME_INVALID', name, 'singleton')
    const roles = checkOptions(singletonOptions, opts, 'CHORUS_ERR_SINGLETON_OPTIONS_INVALID').roles ?? []
    if (this.#entries.has(name)) throw new ChorusError('CHORUS_ERR_SINGLETON_DUPLICATE', [name])
    if (!this.#open) throw new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', ['draining', 'starting a singleton'])
    const eligible = roles.length === 0 || roles.some((r) => this.#roles.includes(r))
    const entry: Entry = { name, start: opts.start.bind(opts), eligible, state: leaseMachine(name), controller: null, epoch: 0, fence: 0, running: null, failures: 0, retryAt: 0, leaseFailures: 0, leaseRetry: null }
    this.#entries.set(name, entry)
    void this.#tryAcquire(entry)
    return {
      name,
      get held() {
        return entry.state.is('held') && !entry.controller?.signal.aborted
      },
      close: async () => {
        await this.#stop(entry, 'closed', true)
        entry.state.to('closed')
        this.#entries.delete(name)
      },
    }
  }

  async start(): Promise<void> {
    this.#offs.push(
      this.#bus.subscribe(channels.singletons, (name) => {
        const e = this.#entries.get(name)
        if (e) void this.#tryAcquire(e)
      }),
      this.#members.on('member:down', () => this.#tryAll()),
      this.#members.on('member:self:rejoined', () => {
        this.#watchSignal()
        this.#tryAll()
      }),
    )
    this.#watchSignal()
    this.#schedulePoll()
  }

  /** A draining instance gives its singletons to others: abort, let `start` settle, release. */
  async drain(): Promise<void> {
    this.#open = false
    if (this.#pollTimer) clearTimeout(this.#pollTimer)
    await Promise.all([...this.#entries.values()].map((e) => this.#stop(e, 'draining', true)))
  }

  async close(): Promise<void> {
    await this.drain()
    for (const off of this.#offs.splice(0)) off()
  }

  #canAcquire(e: Entry): boolean {
    return this.#open && e.eligible && e.state.is('idle') && this.#members.self.state === 'up' && Date.now() >= e.retryAt
  }

  #tryAll(): void {
    for (const e of this.#entries.values()) void this.#tryAcquire(e)
  }

  #schedulePoll(): void {
    if (!this.#open) return
    const every = Math.min(SAFETY_POLL_MS, this.#members.self.state === 'up' ? 2000 : SAFETY_POLL_MS)
    this.#pollTimer = setTimeout(() => {
      void this.#check().finally(() => this.#schedulePoll())
    }, every * (0.8 + 0.4 * Math.random()))
    this.#pollTimer.unref()
  }

  /** Safety poll: acquire free leases (a lost wake-up) and notice a lease that is no longer ours. */
  async #check(): Promise<void> {
    const held = [...this.#entries.values()].filter((e) => e.state.is('held'))
    if (held.length > 0) {
      try {
        const rows = await leaseHolders(
          this.#sql,
          this.#s,
          held.map((e) => e.name),
        )
        const byName = new Map(rows.map((r) => [r.name, r]))
        for (const e of held) {
          const r = byName.get(e.name)
          if (e.state.is('held') && (!r || r.holder !== this.#instanceId || Number(r.holder_epoch) !== e.epoch)) {
            this.#log.error({ singleton: e.name, holder: r?.holder }, 'the lease is held by another instance; stopping here')
            void this.#stop(e, 'lost', false)
          }
        }
      } catch (err) {
        this.#log.debug({ err: toError(err) }, 'lease check failed')
      }
    }
    this.#tryAll()
  }

  /** Isolation aborts every singleton here at once: peers may take them over as soon as they see this instance down. */
  #watchSignal(): void {
    const signal = this.#members.signal
    if (signal === this.#signal) return
    this.#signal = signal
    const onAbort = () => {
      for (const e of this.#entries.values()) {
        if (e.state.is('held')) void this.#stop(e, 'isolated', false)
      }
    }
    if (signal.aborted) onAbort()
    else signal.addEventListener('abort', onAbort, { once: true })
  }

  async #tryAcquire(e: Entry): Promise<void> {
    if (!this.#canAcquire(e)) return
    e.state.to('acquiring')
    const epoch = this.#members.self.epoch
    const signal = this.#members.signal
    let fence: number | null = null
    try {
      fence = await acquireLease(this.#sql, this.#s, { name: e.name, instanceId: this.#instanceId, epoch })
      e.leaseFailures = 0
    } catch (err) {
      const retryInMs = Math.round(reconnectDelayMs(e.leaseFailures++))
      // Once per run of failures at warn: a database that is away fails every retry.
      this.#log[e.leaseFailures === 1 ? 'warn' : 'debug']({ err: toError(err), singleton: e.name, retryInMs }, 'could not try the lease; trying again')
      if (e.leaseRetry) clearTimeout(e.leaseRetry)
      e.leaseRetry = setTimeout(() => {
        e.leaseRetry = null
        void this.#tryAcquire(e)
      }, retryInMs)
      e.leaseRetry.unref()
    }
    if (!e.state.is('acquiring')) return
    if (fence === null) {
      e.state.to('idle')
      return
    }
    if (!this.#open || signal.aborted || this.#members.self.epoch !== epoch) {
      e.state.to('idle')
      await this.#release(e.name, epoch)
      return
    }
    const controller = new AbortController()
    e.state.to('held')
    e.controller = controller
    e.epoch = epoch
    e.fence = fence
    this.#log.info({ singleton: e.name, fence }, 'acquired; starting')
    this.#events.emit('singleton:acquired', { name: e.name, fence })
    e.running = Promise.resolve()
      .then(() => e.start(controller.signal))
      .then(
        () => {
          e.failures = 0
        },
        (err: unknown) => {
          if (controller.signal.aborted) return
          e.failures++
          const retryInMs = Math.min(60_000, RETRY_AFTER_FAILURE_MS * 2 ** (e.failures - 1))
          this.#log.error({ err: toError(err), singleton: e.name, retryInMs }, 'start failed; releasing it')
          this.#events.emit('singleton:failed', { name: e.name, error: toError(err).message, retryInMs })
          e.retryAt = Date.now() + retryInMs
          void this.#stop(e, 'failed', true).then(() => {
            const t = setTimeout(() => void this.#tryAcquire(e), retryInMs)
            t.unref()
          })
        },
      )
  }

  /** Aborts the holder's signal, waits (bounded) for `start` to settle, then releases the lease when asked. */
  async #stop(e: Entry, reason: 'draining' | 'closed' | 'isolated' | 'failed' | 'lost', release: boolean): Promise<void> {
    if (e.state.is('acquiring')) {
      e.state.to('idle')
      return
    }
    if (!e.state.is('held')) return
    e.state.to('stopping')
    const code = reason === 'isolated' ? 'CHORUS_ERR_MEMBERSHIP_ISOLATED' : 'CHORUS_ERR_CLUSTER_CLOSED'
    const why =
      reason === 'isolated' ? this.#members.signal.reason : new ChorusError(code, [reason === 'lost' ? 'no longer holding it' : reason, `running singleton "${e.name}"`])
    e.controller?.abort(why)
    if (release) {
      // Whichever first: `start` settled, or the grace period is over.
      await untilAborted(e.running ?? Promise.resolve(), AbortSignal.timeout(this.#drainGraceMs)).catch(() => undefined)
      await this.#release(e.name, e.epoch)
    }
    this.#events.emit('singleton:stopped', { name: e.name, reason })
    // Unregistered meanwhile (close() while stopping): it stays closed.
    if (!e.state.is('closed')) e.state.to(this.#open && reason !== 'closed' ? 'idle' : 'closed')
    e.controller = null
  }

  async #release(name: string, epoch: number): Promise<void> {
    try {
      await releaseLease(this.#sql, this.#s, { name, instanceId: this.#instanceId, epoch })
      this.#bus.notify(channels.singletons, name)
    } catch (err) {
      this.#log.warn({ err: toError(err), singleton: name }, 'could not release the lease; it frees when this instance leaves')
    }
  }
}
