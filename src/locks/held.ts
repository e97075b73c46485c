/**
 * The leases this instance holds, and every way one goes back to the database: `release()`, a
 * loss (TTL, isolation, closing), a grant nobody wants any more, a waiter that gave up, and the
 * leases of a member that is down. A release that cannot reach the database is retried in the
 * background until it does or the lease's epoch ended; waiters it may unblock are woken each time.
 */
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import { toError } from '../errors.js'
import type { Events } from '../events.js'
import type { Membership } from '../membership/membership.js'
import { Rerun } from '../util/rerun.js'
import type { Lease, LeaseOwner, LossReason } from './lease.js'
import type { Resource } from './paths.js'
import type { LockStore } from './store.js'
import type { Wakeups } from './wakeups.js'

/** A failed release is retried in the background this often. */
const RELEASE_RETRY_MS = 1000

export class HeldLeases implements LeaseOwner {
  readonly #members: Membership
  readonly #events: Events
  readonly #log: Logger
  readonly #store: LockStore
  readonly #wakeups: Wakeups
  readonly #held = new Set<Lease>()
  /** Leases whose release could not reach the database yet. */
  readonly #unreleased = new Set<Lease>()
  /** Aborts the background retry loop (on close). */
  readonly #stopping = new AbortController()
  readonly #retry: Rerun
  #retrying: Promise<void> | null = null

  constructor(deps: { members: Membership; events: Events; log: Logger; store: LockStore; wakeups: Wakeups }) {
    this.#members = deps.members
    this.#events = deps.events
    this.#log = deps.log
    this.#store = deps.store
    this.#wakeups = deps.wakeups
    this.#retry = new Rerun(
      () => this.#retryReleases(),
      (err) => this.#log.debug({ err: toError(err) }, 'retrying lock releases failed'),
    )
  }

  /** Leases held now. */
  get all(): Lease[] {
    return [...this.#held]
  }

  add(lease: Lease): void {
    this.#held.add(lease)
  }

  /** LeaseOwner */
  released(lease: Lease): void {
    this.#held.delete(lease)
    this.#events.emit('lock:released', {
      name: lease.name, path: lease.path, mode: lease.mode, token: lease.token.toString(), heldMs: Math.round(performance.now() - lease.acquiredAt),
    })
  }

  /** LeaseOwner */
  lost(lease: Lease, reason: LossReason): void {
    const wasHeld = this.#held.delete(lease)
    if (!wasHeld) return
    this.#log.warn({ name: lease.name, token: lease.token.toString(), reason }, 'lock lost')
    this.#events.emit('lock:lost', { name: lease.name, path: lease.path, mode: lease.mode, token: lease.token.toString(), reason })
  }

  /** LeaseOwner: deletes the lease; on failure keeps retrying in the background. Never rejects. */
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
      this.#retryInBackground()
    }
  }

  /** Gives back a lease granted to a request that no longer wants it. Never rejects. */
  async freeById(resource: Resource, leaseId: string): Promise<void> {
    try {
      const { released, wake } = await this.#store.release(resource, leaseId)
      if (released) this.#wakeups.released(resource.space, [resource.target], wake)
    } catch (err) {
      this.#log.warn({ err: toError(err), name: resource.target }, 'could not give back an unwanted lease; it ends with this membership epoch')
    }
  }

  /** Removes the waiter row of a request that gave up. Never rejects. */
  async unwait(resource: Resource, waiter: string): Promise<void> {
    try {
      const wake = await this.#store.unwait(resource, waiter)
      if (wake) this.#wakeups.released(resource.space, [resource.target], true)
    } catch (err) {
      this.#log.debug({ err: toError(err) }, 'could not remove a waiter; its row expires by itself')
    }
  }

  /** Frees the leases of a member that is down (any instance may; the first one does the work). */
  async reap(instanceId: string, epoch: number): Promise<void> {
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

  /** Loses every held lease ('closing'), stops the background retry and tries the failed releases once more. */
  async close(): Promise<void> {
    await Promise.all([...this.#held].map((l) => l.lose('closing')))
    this.#stopping.abort()
    await this.#retrying
    if (this.#unreleased.size > 0) {
      await this.#retry.run()
      if (this.#unreleased.size > 0) this.#log.warn({ leases: this.#unreleased.size }, 'could not release every lock on close; leaving the cluster frees them')
    }
  }

  #retryInBackground(): void {
    if (this.#retrying || this.#stopping.signal.aborted) return
    this.#retrying = this.#retryLoop().finally(() => {
      this.#retrying = null
    })
  }

  async #retryLoop(): Promise<void> {
    while (this.#unreleased.size > 0) {
      try {
        await sleep(RELEASE_RETRY_MS, undefined, { signal: this.#stopping.signal, ref: false })
      } catch {
        return // closing: close() makes the last try
      }
      await this.#retry.run()
    }
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
}

/** Deadlock (two reapers meeting) and serialization failures are safe to retry. */
export function isRetryable(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return code === '40P01' || code === '40001'
}
