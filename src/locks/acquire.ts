/**
 * Lock requests: their options (one strict schema), and the wait for a grant. A request attempts,
 * and while blocked sleeps until a wake-up, the safety poll or a blocking TTL running out; it ends
 * granted, refused (`null` when not waiting), or stopped by its deadline, its signal or the
 * subsystem closing. A grant that arrives after the request stopped is given back at once, and a
 * waiter row it leaves is removed, so a stopped request never holds anything.
 */
import { performance } from 'node:perf_hooks'
import { z } from 'zod'
import { ChorusError } from '../errors.js'
import type { Events } from '../events.js'
import type { Membership } from '../membership/membership.js'
import { LinkedSignal, untilAborted } from '../util/abort.js'
import { parseCallOptions } from '../util/call-options.js'
import { isRetryable, type HeldLeases } from './held.js'
import { Lease, type LockMode } from './lease.js'
import type { Resource } from './paths.js'
import { newLeaseId, type AttemptInput, type AttemptResult, type KeyMode, type LockStore } from './store.js'
import type { Wakeups } from './wakeups.js'

/** Between wake-ups, a waiter retries on its own this often (jittered ±20 %). */
const SAFETY_POLL_MS = 1000
/** A waiter row not refreshed for this long is ignored, so a stuck waiter cannot stall a queue. */
const WAITER_TTL_MS = 5000
/** Most requests waiting at once on one instance; more are refused (`CHORUS_ERR_LOCK_TOO_MANY_WAITERS`). */
const MAX_WAITING = 10_000
/** Longest accepted `waitMs` / `ttlMs` that is not `Infinity` (setTimeout's limit). */
const MAX_TIMER_MS = 2_147_483_647

const lockOptions = z.strictObject({
  /** `exclusive` (the default) or `shared`: shared holders overlap each other, never an exclusive one. */
  mode: z.enum(['exclusive', 'shared'], { error: (issue) => `must be "exclusive" or "shared", not ${JSON.stringify(issue.input)}` }).optional(),
  /** Longest wait before failing with `CHORUS_ERR_LOCK_TIMEOUT`. Default: no limit. `0` tries once. */
  waitMs: z
    .custom<number>((v) => typeof v === 'number' && v >= 0 && (v === Number.POSITIVE_INFINITY || v <= MAX_TIMER_MS), {
      error: `must be a number of milliseconds from 0 to ${MAX_TIMER_MS}, or Infinity`,
    })
    .optional(),
  /** Stops waiting when aborted; the acquire rejects with the signal's reason. */
  signal: z.instanceof(AbortSignal, { error: 'must be an AbortSignal' }).optional(),
  /**
   * The lease expires this long after it was granted (database time) unless released before; the
   * lock's signal aborts at that moment or earlier. Default: no TTL — the lease lasts until
   * `release()` or until this instance's membership ends.
   */
  ttlMs: z
    .custom<number>((v) => typeof v === 'number' && Number.isInteger(v) && v > 0 && v <= MAX_TIMER_MS, {
      error: `must be a whole number of milliseconds from 1 to ${MAX_TIMER_MS}`,
    })
    .optional(),
})

export type LockOptions = z.input<typeof lockOptions>

/** Options of the path-lock methods: the mode is their own argument. */
export type PathLockOptions = Omit<LockOptions, 'mode'>

export interface Request {
  readonly resource: Resource
  readonly mode: LockMode
  readonly waitMs: number
  readonly ttlMs: number | null
  readonly signal: AbortSignal | undefined
}

/** A request for `resource`, or `CHORUS_ERR_LOCK_OPTIONS_INVALID` naming the bad option. */
export function lockRequest(resource: Resource, opts: unknown): Request {
  const o = parseCallOptions(lockOptions, opts, invalidOption)
  return { resource, mode: o.mode ?? 'exclusive', waitMs: o.waitMs ?? Number.POSITIVE_INFINITY, ttlMs: o.ttlMs ?? null, signal: o.signal }
}

export class Requests {
  readonly #members: Membership
  readonly #events: Events
  readonly #store: LockStore
  readonly #wakeups: Wakeups
  readonly #held: HeldLeases
  /** Aborts every wait when the subsystem closes. */
  readonly #closing: AbortSignal

  constructor(deps: { members: Membership; events: Events; store: LockStore; wakeups: Wakeups; held: HeldLeases; closing: AbortSignal }) {
    this.#members = deps.members
    this.#events = deps.events
    this.#store = deps.store
    this.#wakeups = deps.wakeups
    this.#held = deps.held
    this.#closing = deps.closing
  }

  /** Attempts until granted, refused (`null` when not waiting) or stopped (timeout, abort, close). */
  async take(req: Request, wait: boolean): Promise<Lease | null> {
    req.signal?.throwIfAborted()
    if (wait && this.#wakeups.waiting >= MAX_WAITING) {
      throw new ChorusError('CHORUS_ERR_LOCK_TOO_MANY_WAITERS', [MAX_WAITING, JSON.stringify(req.resource.target)], { details: { limit: MAX_WAITING } })
    }
    const started = performance.now()
    const deadline = started + req.waitMs
    // The request stops when the subsystem closes, its signal aborts or its deadline passes. With
    // neither a signal nor a deadline (the usual uncontended acquire) that is the closing signal
    // itself, and no signal of its own is made: it would cost more than the rest of this process's work.
    const timed = Number.isFinite(req.waitMs) && req.waitMs > 0
    const linked = req.signal !== undefined || timed ? new LinkedSignal([this.#closing, req.signal]) : null
    const stop = linked?.signal ?? this.#closing
    const timer = timed ? setTimeout(() => linked!.abort(timeout(req)), req.waitMs) : undefined
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
          const r = await untilAborted(attempt, stop)
          attempt = null
          if (r.status !== 'granted' && r.waiter !== null) waiterId = r.waiter
          if (r.status !== 'not-member' && r.freed.length > 0) this.#wakeups.released(req.resource.space, r.freed, true)
          if (r.status === 'granted') {
            waiterId = null
            const lease = new Lease({
              owner: this.#held, resource: req.resource, mode: req.mode, token: r.token, leaseId,
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
        stop.throwIfAborted()
        if (performance.now() >= deadline) throw timeout(req)
        // Sleep until a wake-up, the safety poll, a blocking TTL running out, or the deadline.
        let ms = SAFETY_POLL_MS * (0.8 + Math.random() * 0.4)
        if (retryMs !== null) ms = Math.min(ms, Math.max(0, retryMs) + 5)
        await waiter!.sleep(ms, stop)
      }
    } catch (err) {
      // Stopped mid-attempt: a grant that arrives later must be given back at once.
      if (attempt) {
        const id = leaseId
        void attempt.then(
          (r) => {
            if (r.status === 'granted') void this.#held.freeById(req.resource, id)
            else if (r.status === 'blocked' && r.waiter !== null) void this.#held.unwait(req.resource, r.waiter)
          },
          () => undefined, // #attempt gave back whatever a failed attempt may have left
        )
      }
      if (waiterId !== null) void this.#held.unwait(req.resource, waiterId)
      throw err
    } finally {
      clearTimeout(timer)
      linked?.dispose()
      if (waiter) this.#wakeups.remove(waiter)
    }
  }

  /** One attempt; deadlocks between attempts (possible only when reaping dead leases) are retried. */
  async #attempt(input: AttemptInput): Promise<AttemptResult> {
    for (let tries = 0; ; tries++) {
      try {
        return await this.#store.attempt(input)
      } catch (err) {
        if (tries < 5 && isRetryable(err)) continue
        // The outcome is unknown: make sure no lease stays behind under this id.
        void this.#held.freeById(input.resource, input.leaseId)
        throw err
      }
    }
  }
}

function timeout(req: Request): ChorusError {
  return new ChorusError('CHORUS_ERR_LOCK_TIMEOUT', [JSON.stringify(req.resource.target), req.waitMs], {
    details: { name: req.resource.target, waitMs: req.waitMs },
  })
}

function invalidOption(option: string, why: string): ChorusError {
  return new ChorusError('CHORUS_ERR_LOCK_OPTIONS_INVALID', [option, why], { details: { option } })
}

function isolated(): ChorusError {
  return new ChorusError('CHORUS_ERR_MEMBERSHIP_ISOLATED', ['taking a lock'])
}
