/**
 * Typed cluster events, named `subsystem:object:phase`. Listeners run synchronously in registration
 * order; a listener that throws (or returns a rejected promise) is logged and skipped, so no
 * listener can break the subsystem that emitted the event.
 */
import type { Logger } from 'pino'
import { toError } from './errors.js'

export type MemberStatus = 'up' | 'draining' | 'down'

/** What every instance knows about a member (one row of the membership table). */
export interface MemberInfo {
  readonly instanceId: string
  readonly epoch: number
  readonly status: MemberStatus
  readonly advertiseUrl: string | null
  readonly roles: readonly string[]
  readonly metadata: Readonly<Record<string, unknown>>
  readonly pid: number | null
  readonly host: string | null
  readonly startedAt: Date
  readonly heartbeatAt: Date
  /** Age of the last heartbeat in milliseconds, on database time, when the view was read. */
  readonly heartbeatAgeMs: number
  /** Why a down member is down: `expired` (declared by a peer) or `left` (graceful). */
  readonly downReason: string | null
  /** `chorus`: an instance running Chorus; `eureka`: a service registered through the dashboard's Eureka API (no RPC, no advertised URL). */
  readonly kind: 'chorus' | 'eureka'
}

export type GapReason = 'reconnect' | 'sequence' | 'payload-expired'

export interface ClusterEvents {
  'cluster:state:change': { from: string; to: string }
  'member:up': { member: MemberInfo }
  'member:draining': { member: MemberInfo }
  'member:down': { member: MemberInfo; reason: 'expired' | 'left' | 'restarted' }
  'member:self:isolated': { epoch: number; silentForMs: number }
  'member:self:rejoined': { previousEpoch: number; epoch: number }
  'member:burst:suspected': { expired: readonly string[]; live: number }
  'bus:gap': { reason: GapReason; publisher?: string; missed?: number }
  'bus:connection:lost': { error: string }
  'bus:connection:restored': Record<string, never>
  /** This instance took a lock; `token` is the fencing token as a decimal string. */
  'lock:acquired': { name: string; path: boolean; mode: 'exclusive' | 'shared'; token: string; waitedMs: number }
  'lock:released': { name: string; path: boolean; mode: 'exclusive' | 'shared'; token: string; heldMs: number }
  /** A lock held here stopped being safe to use before `release()`: TTL passed, isolated, closing. */
  'lock:lost': { name: string; path: boolean; mode: 'exclusive' | 'shared'; token: string; reason: 'ttl' | 'isolated' | 'closing' | 'gone' }
  /** This instance removed the leases of a member that is down. */
  'lock:reaped': { instanceId: string; epoch: number; leases: number }
  /** A job was stored (or, with a dedupe key, found already stored: `deduplicated`). */
  'job:enqueued': { id: string; name: string; deduplicated: boolean }
  'job:started': { id: string; name: string; attempt: number }
  'job:completed': { id: string; name: string; attempt: number; durationMs: number }
  /** An attempt failed; `retryInMs` is null when the job is now kept as failed. */
  'job:failed': { id: string; name: string; attempt: number; error: string; retryInMs: number | null }
  /** Claims went back to the queue: their claimer went down (`from`), its claim was found dead, or a drain handed them back. */
  'job:requeued': { ids: readonly string[]; reason: 'member-down' | 'claim-expired' | 'drain'; from: string | null }
  /** A completion here found its claim gone; nothing was recorded (a transactional handler's writes rolled back). */
  'job:claim:lost': { id: string; name: string; attempt: number }
  'job:cancelled': { id: string }
  /** This instance claimed a cron tick and enqueued its run (`catchUp`: a missed tick run under `missed: 'run-once'`). */
  'cron:tick:enqueued': { name: string; tick: Date; jobId: string; catchUp: boolean }
  /** A tick passed while no eligible instance claimed it. */
  'cron:tick:missed': { name: string; tick: Date; policy: 'skip' | 'run-once' }
  /** This instance holds the singleton and called its `start`; `fence` grows with every change of holder. */
  'singleton:acquired': { name: string; fence: number }
  'singleton:stopped': { name: string; reason: 'draining' | 'closed' | 'isolated' | 'failed' | 'lost' }
  'singleton:failed': { name: string; error: string; retryInMs: number }
  'db:migration:applied': { version: number; name: string }
  /** A temporary file (or the remains of a removed directory) was deleted by a sweep; `path` is relative to the files root. */
  'files:temp:swept': { path: string; instanceId: string | null; epoch: number | null; reason: 'writer-down' | 'writer-unknown' | 'age' }
  /** The shared configuration this instance runs moved to `version`; `changed` names the keys whose values differ. */
  'config:changed': { version: number; changed: readonly string[] }
  /** An RPC request was refused before any handler ran. */
  'rpc:request:refused': { reason: 'unsigned' | 'signature' | 'stale' | 'replay' | 'too-large' | 'misdirected'; from: string | null; method: string | null }
}

export type EventName = keyof ClusterEvents
export type Listener<E extends EventName> = (payload: ClusterEvents[E]) => void | Promise<void>

export class Events {
  readonly #listeners = new Map<EventName, Set<Listener<EventName>>>()
  readonly #log: Logger

  constructor(log: Logger) {
    this.#log = log
  }

  on<E extends EventName>(event: E, listener: Listener<E>): () => void {
    let set = this.#listeners.get(event)
    if (!set) this.#listeners.set(event, (set = new Set()))
    set.add(listener as Listener<EventName>)
    return () => this.off(event, listener)
  }

  once<E extends EventName>(event: E, listener: Listener<E>): () => void {
    const off = this.on(event, (payload) => {
      off()
      return listener(payload)
    })
    return off
  }

  off<E extends EventName>(event: E, listener: Listener<E>): void {
    this.#listeners.get(event)?.delete(listener as Listener<EventName>)
  }

  /** Resolves with the next payload of `event`, or rejects when `signal` aborts. */
  next<E extends EventName>(event: E, signal?: AbortSignal): Promise<ClusterEvents[E]> {
    return new Promise((resolve, reject) => {
      // An abort listener added to an already aborted signal never fires.
      if (signal?.aborted) return reject(signal.reason)
      const off = this.once(event, (payload) => {
        signal?.removeEventListener('abort', onAbort)
        resolve(payload)
      })
      const onAbort = () => {
        off()
        reject(signal?.reason)
      }
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  emit<E extends EventName>(event: E, payload: ClusterEvents[E]): void {
    const set = this.#listeners.get(event)
    if (!set || set.size === 0) return
    for (const listener of [...set]) {
      try {
        const result = listener(payload)
        if (result && typeof (result as Promise<void>).then === 'function') {
          ;(result as Promise<void>).then(undefined, (err: unknown) => this.#report(event, err))
        }
      } catch (err) {
        this.#report(event, err)
      }
    }
  }

  listenerCount(event: EventName): number {
    return this.#listeners.get(event)?.size ?? 0
  }

  #report(event: EventName, err: unknown): void {
    this.#log.error({ err: toError(err), event }, 'an event listener failed; the event was still delivered to the others')
  }
}
