/**
 * Cluster-wide locks: fenced leases in PostgreSQL, exclusive or shared, on plain names or on paths
 * (with intention locks on every ancestor). A lease belongs to this instance's membership epoch,
 * so a holder that membership declares down loses it at once; waiters queue in arrival order and
 * are woken over the bus when a lease goes, with a slow poll as the safety net. Locks are not
 * reentrant: a second request for a held name waits like anyone else's. This file owns the API
 * and the subsystem's lifecycle; requests wait in acquire.ts, held leases go back in held.ts.
 */
import { setMaxListeners } from 'node:events'
import { ChorusError } from '../errors.js'
import type { Sql } from '../db/connect.js'
import type { Membership } from '../membership/membership.js'
import type { Subsystem, SubsystemDeps } from '../subsystem.js'
import { Machine } from '../util/machine.js'
import { lockRequest, Requests, type LockOptions, type PathLockOptions, type Request } from './acquire.js'
import { HeldLeases } from './held.js'
import type { Lock, LockMode } from './lease.js'
import { nameResource, pathResource } from './paths.js'
import { LockStore } from './store.js'
import { Wakeups } from './wakeups.js'

/**
 * States of the subsystem, each with the states it may be entered from:
 * - `new`: constructed, not started; requests are refused.
 * - `open`: taking requests.
 * - `closed`: every request refused; pending waits were ended and held locks released. Entered
 *   from `new` too, when the cluster closes before it started the subsystem.
 */
export const enteredFrom = {
  new: [],
  open: ['new'],
  closed: ['new', 'open'],
} as const

export type LocksState = keyof typeof enteredFrom

/** The subsystem's state machine (exported so its transitions can be shown without a database). */
export function locksMachine(): Machine<LocksState> {
  return new Machine<LocksState>('locks', enteredFrom, 'new')
}

export type { Lock, LockMode } from './lease.js'
export type { LockOptions, PathLockOptions } from './acquire.js'

export class Locks implements Subsystem {
  readonly name = 'locks'
  readonly #members: Membership
  readonly #sql: Sql
  readonly #wakeups: Wakeups
  readonly #held: HeldLeases
  readonly #requests: Requests
  readonly #closing = new AbortController()
  readonly #machine = locksMachine()
  #off: (() => void)[] = []

  constructor(deps: SubsystemDeps) {
    this.#members = deps.members
    const log = deps.log.child({ subsystem: 'locks' })
    // Own connections: lock round trips stay short and hot instead of queueing behind other
    // subsystems' work. Holding a lock does not hold a connection, so a few suffice.
    this.#sql = deps.db.open('locks', Math.max(2, Math.ceil(deps.options.poolSize / 2)))
    const store = new LockStore(this.#sql, deps.db.schema)
    this.#wakeups = new Wakeups({ bus: deps.bus, events: deps.events, log })
    this.#held = new HeldLeases({ members: deps.members, events: deps.events, log, store, wakeups: this.#wakeups })
    this.#requests = new Requests({
      members: deps.members, events: deps.events, store, wakeups: this.#wakeups, held: this.#held, closing: this.#closing.signal,
    })
    // Every waiting request listens on it (up to the waiting limit): not a leak past Node's default of 10.
    setMaxListeners(0, this.#closing.signal)
  }

  /** Part of the subsystem lifecycle: called by the cluster, not by applications. */
  async start(): Promise<void> {
    this.#machine.to('open')
    this.#wakeups.start()
    this.#off.push(
      this.#members.on('member:down', ({ member }) => void this.#reap(member.instanceId, member.epoch)),
      this.#members.on('member:self:rejoined', ({ previousEpoch }) => void this.#reap(this.#members.self.instanceId, previousEpoch)),
    )
  }

  /**
   * Takes the lock `name`, waiting as long as `waitMs` allows. Rejects with
   * `CHORUS_ERR_LOCK_TIMEOUT` when the wait runs out, with `signal.reason` when `signal` aborts,
   * and with `CHORUS_ERR_LOCK_NAME_INVALID` / `CHORUS_ERR_LOCK_OPTIONS_INVALID` for bad input.
   * While this instance is isolated the wait continues until it rejoins. Not reentrant.
   */
  async acquire(name: string, opts: LockOptions = {}): Promise<Lock> {
    const lease = await this.#take(lockRequest(nameResource(name), opts), true)
    return lease!
  }

  /** Takes the lock if it is free now (and nobody queues ahead); otherwise resolves `null`. */
  async tryAcquire(name: string, opts: Omit<LockOptions, 'waitMs'> = {}): Promise<Lock | null> {
    return this.#take(lockRequest(nameResource(name), { ...opts, waitMs: 0 }), false)
  }

  /** Runs `fn` holding the lock, and releases it however `fn` ends. */
  async withLock<T>(name: string, fn: (lock: Lock) => T | Promise<T>, opts: LockOptions = {}): Promise<T> {
    const lock = await this.acquire(name, opts)
    try {
      return await fn(lock)
    } finally {
      await lock.release()
    }
  }

  /**
   * Takes a path lock: `mode` on `path` and the matching intention on each ancestor, so an
   * exclusive lock on `a/b` and any lock on `a/b/…` exclude each other while `a/c` is unaffected.
   * Paths are relative, `/`-separated, without empty, `.` or `..` segments.
   */
  async path(path: string, mode: LockMode = 'exclusive', opts: PathLockOptions = {}): Promise<Lock> {
    const lease = await this.#take(lockRequest(pathResource(path), { ...opts, mode }), true)
    return lease!
  }

  /** `path()` that does not wait: `null` when the path lock is not free now. */
  async tryPath(path: string, mode: LockMode = 'exclusive', opts: Omit<PathLockOptions, 'waitMs'> = {}): Promise<Lock | null> {
    return this.#take(lockRequest(pathResource(path), { ...opts, mode, waitMs: 0 }), false)
  }

  /** Runs `fn` holding a path lock, and releases it however `fn` ends. */
  async withPath<T>(path: string, mode: LockMode, fn: (lock: Lock) => T | Promise<T>, opts: PathLockOptions = {}): Promise<T> {
    const lock = await this.path(path, mode, opts)
    try {
      return await fn(lock)
    } finally {
      await lock.release()
    }
  }

  /** Locks this instance holds now. */
  held(): Lock[] {
    return this.#held.all
  }

  /** Requests waiting on this instance now. */
  get waiting(): number {
    return this.#wakeups.waiting
  }

  /** Part of the subsystem lifecycle, called by the cluster: releases every lock this instance holds and ends every wait. */
  async close(): Promise<void> {
    if (this.#machine.is('closed')) return
    this.#machine.to('closed')
    this.#closing.abort(new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', ['closing', 'waiting for a lock']))
    for (const off of this.#off) off()
    this.#off = []
    await this.#held.close()
    this.#wakeups.stop()
    await this.#sql.end({ timeout: 5 }).catch(() => undefined)
  }

  #take(req: Request, wait: boolean): Promise<Lock | null> {
    if (!this.#machine.is('open')) {
      return Promise.reject(new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', [this.#machine.is('new') ? 'starting' : 'closed', 'taking a lock']))
    }
    return this.#requests.take(req, wait)
  }

  /** Frees the leases of a member that is down, while open. */
  async #reap(instanceId: string, epoch: number): Promise<void> {
    if (this.#machine.is('open')) await this.#held.reap(instanceId, epoch)
  }
}
