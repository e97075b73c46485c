/**
 * A held lock: its fencing token and the signal that says when it stopped being safe to act on.
 * The signal aborts on `release()`, when the TTL passes (measured from when the request was sent,
 * so strictly before the database's expiry), and when this instance's membership ends (isolation or
 * leaving) — which membership guarantees happens before any peer may free the lease.
 */
import { performance } from 'node:perf_hooks'
import { ChorusError } from '../errors.js'
import type { Resource } from './paths.js'
import { PATH_SPACE } from './paths.js'

export type LockMode = 'exclusive' | 'shared'

/**
 * A lock held by this instance. Not reentrant: acquiring the same name again from the same
 * instance (or the same code path) waits for this one like any other request would.
 */
export interface Lock {
  /** The name (or path) the lock was taken on. */
  readonly name: string
  /** True for path locks (`locks.path`). */
  readonly path: boolean
  readonly mode: LockMode
  /**
   * The fencing token: strictly greater than every token handed out before for this name (or
   * path), across the cluster and across database restarts. Pass it to whatever the lock protects
   * and have that refuse writes carrying a smaller token than one it has seen.
   */
  readonly token: bigint
  /** Aborted when the lock is released or lost; `reason` is a `ChorusError` saying why. */
  readonly signal: AbortSignal
  /** Releases the lock. Never rejects; safe to call more than once. */
  release(): Promise<void>
}

export type LossReason = 'ttl' | 'isolated' | 'closing' | 'gone'

/** What a lease needs from the subsystem that owns it. */
export interface LeaseOwner {
  /** Deletes the lease in the database (retrying in the background if it cannot). */
  free(lease: Lease): Promise<void>
  /** The lease stopped being safe before `release()`. */
  lost(lease: Lease, reason: LossReason): void
  released(lease: Lease): void
}

export class Lease implements Lock {
  readonly name: string
  readonly path: boolean
  readonly mode: LockMode
  readonly token: bigint
  readonly resource: Resource
  readonly leaseId: string
  /** The membership epoch the lease was granted under. */
  readonly epoch: number
  readonly acquiredAt = performance.now()
  readonly #owner: LeaseOwner
  readonly #controller = new AbortController()
  readonly #memberSignal: AbortSignal
  readonly #onMemberAbort = () => this.lose('isolated')
  #timer: NodeJS.Timeout | null = null
  #freeing: Promise<void> | null = null
  #lossReason: LossReason | null = null

  constructor(p: {
    owner: LeaseOwner
    resource: Resource
    mode: LockMode
    token: bigint
    leaseId: string
    epoch: number
    ttlMs: number | null
    /** performance.now() when the request that granted the lease was sent. */
    sentAt: number
    memberSignal: AbortSignal
  }) {
    this.#owner = p.owner
    this.resource = p.resource
    this.name = p.resource.target
    this.path = p.resource.space === PATH_SPACE
    this.mode = p.mode
    this.token = p.token
    this.leaseId = p.leaseId
    this.epoch = p.epoch
    this.#memberSignal = p.memberSignal
    p.memberSignal.addEventListener('abort', this.#onMemberAbort, { once: true })
    if (p.ttlMs !== null) {
      this.#timer = setTimeout(() => this.lose('ttl'), Math.max(0, p.ttlMs - (performance.now() - p.sentAt)))
      this.#timer.unref()
    }
  }

  get signal(): AbortSignal {
    return this.#controller.signal
  }

  get released(): boolean {
    return this.#freeing !== null
  }

  /** Why the lease was lost before `release()`, if it was. */
  get lossReason(): LossReason | null {
    return this.#lossReason
  }

  release(): Promise<void> {
    if (this.#freeing) return this.#freeing
    this.#stop(released(this.name, this.token))
    this.#owner.released(this)
    this.#freeing = this.#owner.free(this)
    return this.#freeing
  }

  /** The lease can no longer be trusted: abort the signal first, then give it back. */
  lose(reason: LossReason): Promise<void> {
    if (this.#freeing) return this.#freeing
    this.#lossReason = reason
    const why = {
      ttl: 'its TTL passed',
      isolated: 'this instance lost its membership (isolated or leaving)',
      closing: 'the cluster is closing',
      gone: 'its lease was no longer in the database',
    }[reason]
    const reasonErr =
      reason === 'closing'
        ? new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', ['closing', `holding lock ${JSON.stringify(this.name)}`], { details: { name: this.name } })
        : new ChorusError('CHORUS_ERR_LOCK_LOST', [JSON.stringify(this.name), why], { details: { name: this.name, reason, token: this.token.toString() } })
    this.#stop(reasonErr)
    this.#owner.lost(this, reason)
    this.#freeing = this.#owner.free(this)
    return this.#freeing
  }

  #stop(reason: Error): void {
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = null
    this.#memberSignal.removeEventListener('abort', this.#onMemberAbort)
    this.#controller.abort(reason)
  }
}

/** The abort reason after `release()`. Made without a stack trace: it would only point here, and capturing it costs more than the rest of a release's work in this process. */
function released(name: string, token: bigint): ChorusError {
  const limit = Error.stackTraceLimit
  Error.stackTraceLimit = 0
  try {
    return new ChorusError('CHORUS_ERR_LOCK_RELEASED', [JSON.stringify(name)], { details: { name, token: token.toString() } })
  } finally {
    Error.stackTraceLimit = limit
  }
}
