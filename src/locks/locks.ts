/**
 * Cluster-wide locks: fenced leases in PostgreSQL, exclusive or shared, on plain names or on paths
 * (with intention locks on every ancestor). A lease belongs to this instance's membership epoch,
 * so a holder that membership declares down loses it at once; waiters queue in arrival order and
 * are woken over the bus when a lease goes, with a slow poll as the safety net. Locks are not
 * reentrant: a second request for a held name waits like anyone else's.
 */
import { setMaxListeners } from 'node:events'
import { performance } from 'node:perf_hooks'
import type { Logger } from 'pino'
import { ChorusError, toError } from '../errors.js'
import type { Sql } from '../db/connect.js'
import type { Events } from '../events.js'
import type { Membership } from '../membership/membership.js'
import type { Subsystem, SubsystemDeps } from '../subsystem.js'
import { Lease, type LeaseOwner, type Lock, type LockMode, type LossReason } from './lease.js'
import { nameResource, pathResource, type Resource } from './paths.js'
import { LockStore, newLeaseId, type AttemptResult, type KeyMode } from './store.js'
import { Wakeups } from './wakeups.js'

export type { Lock, LockMode } from './lease.js'

export interface LockOptions {
  /** `exclusive` (the default) or `shared`: shared holders overlap each other, never an exclusive one. */
  mode?: LockMode
  /** Longest wait before failing with `CHORUS_ERR_LOCK_TIMEOUT`. Default: no limit. `0` tries once. */
  waitMs?: number
  /** Stops waiting when aborted; the acquire rejects with the signal's reason. */
  signal?: AbortSignal
  /**
   * The lease expires this long after it was granted (database time) unless released before; the
   * lock's signal aborts at that moment or earlier. Default: no TTL — the lease lasts until
   * `release()` or until this instance's membership ends.
   */
  ttlMs?: number
}

/** Options of the path-lock methods: the mode is their own argument. */
export type PathLockOptions = Omit<LockOptions, 'mode'>

/** Between wake-ups, a waiter retries on its own this often (jittered ±20 %). */
const SAFETY_POLL_MS = 1000
/** A waiter row not refreshed for this long is ignored, so a stuck waiter cannot stall a queue. */
const WAITER_TTL_MS = 5000
/** A failed release is retried in the background this often. */
const RELEASE_RETRY_MS = 1000
/** Most requests waiting at once on one instance; more are refused (`CHORUS_ERR_LOCK_TOO_MANY_WAITERS`). */
const MAX_WAITING = 10_000
/** Longest accepted `waitMs` / `ttlMs` that is not `Infinity` (setTimeout's limit). */
const MAX_TIMER_MS = 2_147_483_647

interface Request {
  readonly resource: Resource
  readonly mode: LockMode
  readonly waitMs: number
  readonly ttlMs: number | null
  readonly signal: AbortSignal | undefined
}

/**
 * States of the subsystem:
 * - `new`: constructed, not started.
 * - `open`: taking requests.
 * - `closed`: every request refused; pending waits were ended and held locks released.
 */
type State = 'new' | 'open' | 'closed'

export class Locks implements Subsystem, LeaseOwner {
  readonly name = 'locks'
  readonly #members: Membership
  readonly #events: Events
  readonly #log: Logger
  readonly #sql: Sql
  readonly #store: LockStore
  readonly #wakeups: Wakeups
  readonly #held = new Set<Lease>()
  /** Leases whose release could not reach the database yet. */
  readonly #unreleased = new Set<Lease>()
  readonly #closing = new AbortController()
  #retryTimer: NodeJS.Timeout | null = null
  #off: (() => void)[] = []
  #state: State = 'new'

  constructor(deps: SubsystemDeps) {
    this.#members = deps.members
    this.#events = deps.events
    this.#log = deps.log.child({ subsystem: 'locks' })
    // Own connections: lock round trips stay short and hot instead of queueing behind other
    // subsystems' work. Holding a lock does not hold a connection, so a few suffice.
    this.#sql = deps.db.open('locks', Math.max(2, Math.ceil(deps.options.poolSize / 2)))
    this.#store = new LockStore(this.#sql, deps.db.schema)
    this.#wakeups = new Wakeups({ bus: deps.bus, events: deps.events, log: this.#log })
    // Every waiting request listens on it (up to MAX_WAITING): not a leak past Node's default of 10.
    setMaxListeners(0, this.#closing.signal)
  }

  /** @internal */
  async start(): Promise<void> {
    this.#setState('open')
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
    const lease = await this.#take(this.#request(nameResource(name), opts), true)
    return lease!
  }

  /** Takes the lock if it is free now (and nobody queues ahead); otherwise resolves `null`. */
  async tryAcquire(name: string, opts: Omit<LockOptions, 'waitMs'> = {}): Promise<Lock | null> {
    return this.#take(this.#request(nameResource(name), { ...opts, waitMs: 0 }), false)
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
    const lease = await this.#take(this.#request(pathResource(path), { ...opts, mode }), true)
    return lease!
  }

  /** `path()` that does not wait: `null` when the path lock is not free now. */
  async tryPath(path: string, mode: LockMode = 'exclusive', opts: Omit<PathLockOptions, 'waitMs'> = {}): Promise<Lock | null> {
    return this.#take(this.#request(pathResource(path), { ...opts, mode, waitMs: 0 }), false)
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
    return [...this.#held]
  }

  /** Requests waiting on this instance now. */
  get waiting(): number {
    return this.#wakeups.waiting
  }

  /** @internal releases every lock this instance holds and ends every wait. */
  async close(): Promise<void> {
    if (this.#state === 'closed') return
    this.#setState('closed')
    this.#closing.abort(new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', ['closing', 'waiting for a lock']))
    for (const off of this.#off) off()
    this.#off = []
    await Promise.all([...this.#held].map((l) => l.lose('closing')))
    if (this.#retryTimer) clearTimeout(this.#retryTimer)
    this.#retryTimer = null
    if (this.#unreleased.size > 0) {
      await this.#retryReleases()
      if (this.#unreleased.size > 0) this.#log.warn({ leases: this.#unreleased.size }, 'could not release every lock on close; leaving the cluster frees them')
    }
    this.#wakeups.stop()
    await this.#sql.end({ timeout: 5 }).catch(() => undefined)
  }

  // ---- requests ------------------------------------------------------------------------------

  #request(resource: Resource, opts: LockOptions): Request {
    if (opts === null || typeof opts !== 'object') throw invalidOption('options', 'must be an object')
    const mode = opts.mode ?? 'exclusive'
    if (mode !== 'exclusive' && mode !== 'shared') throw invalidOption('mode', `must be "exclusive" or "shared", not ${JSON.stringify(mode)}`)
    const waitMs = opts.waitMs ?? Number.POSITIVE_INFINITY
    if (typeof waitMs !== 'number' || Number.isNaN(waitMs) || waitMs < 0 || (Number.isFinite(waitMs) && waitMs > MAX_TIMER_MS)) {
      throw invalidOption('waitMs', `must be a number of milliseconds from 0 to ${MAX_TIMER_MS}, or Infinity`)
    }
    const ttlMs = opts.ttlMs ?? null
    if (ttlMs !== null && (typeof ttlMs !== 'number' || !Number.isInteger(ttlMs) || ttlMs <= 0 || ttlMs > MAX_TIMER_MS)) {
      throw invalidOption('ttlMs', `must be a whole number of milliseconds from 1 to ${MAX_TIMER_MS}`)
    }
    const signal = opts.signal
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalidOption('signal', 'must be an AbortSignal')
    return { resource, mode, waitMs, ttlMs, signal }
  }

  /** Attempts until granted, refused (`null` when not waiting) or stopped (timeout, abort, close). */
  async #take(req: Request, wait: boolean): Promise<Lease | null> {
    if (this.#state !== 'open') throw new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', [this.#state === 'new' ? 'starting' : 'closed', 'taking a lock'])
    req.signal?.throwIfAborted()
    if (wait && this.#wakeups.waiting >= MAX_WAITING) {
      throw new ChorusError('CHORUS_ERR_LOCK_TOO_MANY_WAITERS', [MAX_WAITING, JSON.stringify(req.resource.target)], { details: { limit: MAX_WAITING } })
    }
    const started = performance.now()
    const stop = new Stop(req, started, this.#closing.signal)
    const waiter = wait ? this.#wakeups.add(req.resource) : null
    const keyMode: KeyMode = req.mode === 'exclusive' ? 'X' : 'S'
    // Queue in the database only when the wait may outlast this attempt.
    const queue = wait && req.waitMs > 0
    let waiterId: string | null = null
    let attempt: Promise<AttemptResult> | null = null
    let leaseId = ''
    try {
      for (;;) {
        waiter?.arm()
        const self = this.#members.self
        let retryMs: number | null = null
        if (self.state === 'up' || self.state === 'draining') {
          const memberSignal = self.signal
          leaseId = newLeaseId()
          const sentAt = performance.now()
          attempt = this.#attempt({
            resource: req.resource, mode: keyMode, leaseId, holder: self.instanceId, epoch: self.epoch,
            ttlMs: req.ttlMs, wait: queue, waiter: waiterId, waiterTtlMs: WAITER_TTL_MS,
          })
          const r = await stop.race(attempt)
          attempt = null
          if (r.status !== 'granted' && r.waiter !== null) waiterId = r.waiter
          if (r.status !== 'not-member' && r.freed.length > 0) this.#wakeups.released(req.resource.space, r.freed, true)
          if (r.status === 'granted') {
            waiterId = null
            const lease = new Lease({
              owner: this, resource: req.resource, mode: req.mode, token: r.token, leaseId,
              epoch: self.epoch, ttlMs: req.ttlMs, sentAt, memberSignal,
            })
            if (memberSignal.aborted) {
              // Isolated while the grant was on its way: the lease is already worthless.
              void lease.lose('isolated')
              if (!wait) throw isolated()
              continue
            }
            this.#held.add(lease)
            this.#events.emit('lock:acquired', {
              name: lease.name, path: lease.path, mode: lease.mode, token: lease.token.toString(), waitedMs: Math.round(performance.now() - started),
            })
            return lease
          }
          if (r.status === 'not-member' && !wait) throw isolated()
          if (r.status === 'blocked') retryMs = r.retryMs
        } else if (!wait) {
          throw self.state === 'left' ? new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', ['closed', 'taking a lock']) : isolated()
        }
        if (!wait) return null
        stop.checkDeadline()
        // Sleep until a wake-up, the safety poll, a blocking TTL running out, or the deadline.
        let ms = SAFETY_POLL_MS * (0.8 + Math.random() * 0.4)
        if (retryMs !== null) ms = Math.min(ms, Math.max(0, retryMs) + 5)
        const nap = waiter!.sleep(ms)
        try {
          await stop.race(nap.promise)
        } finally {
          nap.cancel()
        }
      }
    } catch (err) {
      // Stopped mid-attempt: a grant that arrives later must be given back at once.
      if (attempt) {
        const id = leaseId
        const pending = attempt
        void pending.then(
          (r) => {
            if (r.status === 'granted') void this.#freeById(req.resource, id)
            else if (r.status === 'blocked' && r.waiter !== null) void this.#unwait(req.resource, r.waiter)
          },
          () => undefined, // #attempt gave back whatever a failed attempt may have left
        )
      }
      if (waiterId !== null) void this.#unwait(req.resource, waiterId)
      throw err
    } finally {
      stop.dispose()
      if (waiter) this.#wakeups.remove(waiter)
    }
  }

  /** One attempt; deadlocks between attempts (possible only when reaping dead leases) are retried. */
  async #attempt(input: Parameters<LockStore['attempt']>[0]): Promise<AttemptResult> {
    for (let tries = 0; ; tries++) {
      try {
        return await this.#store.attempt(input)
      } catch (err) {
        if (tries < 5 && isRetryable(err)) continue
        // The outcome is unknown: make sure no lease stays behind under this id.
        void this.#freeById(input.resource, input.leaseId)
        throw err
      }
    }
  }

  // ---- leases --------------------------------------------------------------------------------

  /** @internal LeaseOwner */
  released(lease: Lease): void {
    this.#held.delete(lease)
    this.#events.emit('lock:released', {
      name: lease.name, path: lease.path, mode: lease.mode, token: lease.token.toString(), heldMs: Math.round(performance.now() - lease.acquiredAt),
    })
  }

  /** @internal LeaseOwner */
  lost(lease: Lease, reason: LossReason): void {
    const wasHeld = this.#held.delete(lease)
    if (!wasHeld) return
    this.#log.warn({ name: lease.name, token: lease.token.toString(), reason }, 'lock lost')
    this.#events.emit('lock:lost', { name: lease.name, path: lease.path, mode: lease.mode, token: lease.token.toString(), reason })
  }

  /** @internal LeaseOwner: deletes the lease; on failure keeps retrying in the background. Never rejects. */
  async free(lease: Lease): Promise<void> {
    try {
      const { released, wake } = await this.#store.release(lease.resource, lease.leaseId)
      this.#wakeups.released(lease.resource.space, [lease.resource.target], wake)
      if (!released && lease.lossReason === null) {
        this.#log.warn({ name: lease.name, token: lease.token.toString() }, 'released a lock whose lease was already gone (TTL passed or this instance was declared down)')
        this.#events.emit('lock:lost', { name: lease.name, path: lease.path, mode: lease.mode, token: lease.token.toString(), reason: 'gone' })
      }
    } catch (err) {
      this.#log.warn({ err: toError(err), name: lease.name }, 'could not release a lock; retrying in the background')
      this.#unreleased.add(lease)
      this.#scheduleRetry()
    }
  }

  async #freeById(resource: Resource, leaseId: string): Promise<void> {
    try {
      const { released, wake } = await this.#store.release(resource, leaseId)
      if (released) this.#wakeups.released(resource.space, [resource.target], wake)
    } catch (err) {
      this.#log.warn({ err: toError(err), name: resource.target }, 'could not give back an unwanted lease; it ends with this membership epoch')
    }
  }

  async #unwait(resource: Resource, waiter: string): Promise<void> {
    try {
      const wake = await this.#store.unwait(resource, waiter)
      if (wake) this.#wakeups.released(resource.space, [resource.target], true)
    } catch (err) {
      this.#log.debug({ err: toError(err) }, 'could not remove a waiter; its row expires by itself')
    }
  }

  #scheduleRetry(): void {
    if (this.#retryTimer || this.#state === 'closed') return
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null
      void this.#retryReleases().finally(() => {
        if (this.#unreleased.size > 0) this.#scheduleRetry()
      })
    }, RELEASE_RETRY_MS)
    this.#retryTimer.unref()
  }

  async #retryReleases(): Promise<void> {
    const epoch = this.#members.self.epoch
    for (const lease of [...this.#unreleased]) {
      if (lease.epoch !== epoch && this.#members.self.state !== 'isolated') {
        // A newer epoch: the old one's leases were reaped on rejoin.
        this.#unreleased.delete(lease)
        continue
      }
      try {
        const { wake } = await this.#store.release(lease.resource, lease.leaseId)
        this.#unreleased.delete(lease)
        this.#wakeups.released(lease.resource.space, [lease.resource.target], wake)
      } catch {
        return
      }
    }
  }

  /** Frees the leases of a member that is down (any instance may; the first one does the work). */
  async #reap(instanceId: string, epoch: number): Promise<void> {
    if (this.#state !== 'open') return
    try {
      const freed = await this.#store.reap(instanceId, epoch)
      if (freed.length > 0) {
        this.#log.info({ instanceId, epoch, leases: freed.length }, 'freed the locks of a member that is down')
        this.#events.emit('lock:reaped', { instanceId, epoch, leases: freed.length })
        for (const space of [0, 1] as const) {
          const targets = freed.filter((f) => Number(f.space) === space).map((f) => f.name)
          this.#wakeups.released(space, targets, true)
        }
      }
    } catch (err) {
      if (!isRetryable(err)) this.#log.warn({ err: toError(err), instanceId, epoch }, 'could not free the locks of a member that is down; waiters free them as they try')
    }
    // Waiters here re-check at once: the dead member's leases no longer block them.
    this.#wakeups.wakeAll()
  }

  #setState(next: State): void {
    switch (next) {
      case 'new':
      case 'open':
      case 'closed':
        break
      default: {
        const never: never = next
        throw new Error(`unknown state ${String(never)}`)
      }
    }
    this.#state = next
  }
}

/** Ends a request's wait: its signal, its deadline, or the subsystem closing. */
class Stop {
  readonly #req: Request
  readonly #deadline: number
  readonly #cleanup: (() => void)[] = []
  readonly #rejecters = new Set<(reason: unknown) => void>()
  #stopped = false
  #reason: unknown = undefined

  constructor(req: Request, started: number, closing: AbortSignal) {
    this.#req = req
    this.#deadline = started + req.waitMs
    const forward = (s: AbortSignal) => {
      if (s.aborted) return this.#stop(s.reason)
      const on = () => this.#stop(s.reason)
      s.addEventListener('abort', on, { once: true })
      this.#cleanup.push(() => s.removeEventListener('abort', on))
    }
    forward(closing)
    if (req.signal) forward(req.signal)
    if (Number.isFinite(req.waitMs) && req.waitMs > 0) {
      const t = setTimeout(() => this.#stop(this.#timeout()), req.waitMs)
      this.#cleanup.push(() => clearTimeout(t))
    }
  }

  #stop(reason: unknown): void {
    if (this.#stopped) return
    this.#stopped = true
    this.#reason = reason
    for (const reject of this.#rejecters) reject(reason)
    this.#rejecters.clear()
  }

  #timeout(): ChorusError {
    return new ChorusError('CHORUS_ERR_LOCK_TIMEOUT', [JSON.stringify(this.#req.resource.target), this.#req.waitMs], {
      details: { name: this.#req.resource.target, waitMs: this.#req.waitMs },
    })
  }

  checkDeadline(): void {
    if (this.#stopped) throw this.#reason
    if (performance.now() >= this.#deadline) throw this.#timeout()
  }

  /** Resolves with `p`, or rejects with the reason the request stopped. */
  race<T>(p: Promise<T>): Promise<T> {
    if (this.#stopped) return Promise.reject(this.#reason)
    return new Promise<T>((resolve, reject) => {
      this.#rejecters.add(reject)
      p.then(
        (v) => {
          this.#rejecters.delete(reject)
          resolve(v)
        },
        (e: unknown) => {
          this.#rejecters.delete(reject)
          reject(e)
        },
      )
    })
  }

  dispose(): void {
    for (const c of this.#cleanup) c()
  }
}

function invalidOption(option: string, why: string): ChorusError {
  return new ChorusError('CHORUS_ERR_LOCK_OPTIONS_INVALID', [option, why], { details: { option } })
}

function isolated(): ChorusError {
  return new ChorusError('CHORUS_ERR_MEMBERSHIP_ISOLATED', ['taking a lock'])
}

/** Deadlock (two reapers meeting) and serialization failures are safe to retry. */
function isRetryable(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return code === '40P01' || code === '40001'
}

