/**
 * Wake-ups for waiters: a release anywhere in the cluster is published on one bus channel, and
 * every instance wakes its local waiters whose request the release may unblock (same name, or a
 * path that is an ancestor or descendant). The bus is at-most-once, so a possible loss (`bus:gap`)
 * wakes every local waiter, and each waiter also polls slowly on its own.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import type { Bus } from '../bus/bus.js'
import { channels } from '../bus/channels.js'
import type { Events } from '../events.js'
import { untilAborted } from '../util/abort.js'
import { defer } from '../util/deferred.js'
import { related, type Resource, type Space } from './paths.js'

export const WAKE_CHANNEL = channels.locks
/** Messages longer than this wake everyone instead of naming the targets. */
const MAX_MESSAGE_CHARS = 4000

/** One waiting request on this instance. */
export class Waiter {
  readonly resource: Resource
  /** A wake-up arrived since the last `arm()`. */
  #pending = false
  #resolve: (() => void) | null = null

  constructor(resource: Resource) {
    this.resource = resource
  }

  /** Forgets earlier wake-ups; call before each attempt so one that arrives during it is kept. */
  arm(): void {
    this.#pending = false
  }

  /**
   * Resolves at the next wake-up (at once if one arrived since `arm()`) or after `ms`; rejects with
   * `signal`'s reason as soon as it aborts.
   */
  async sleep(ms: number, signal: AbortSignal): Promise<void> {
    if (this.#pending) return
    const woken = defer()
    this.#resolve = () => woken.resolve()
    const nap = new AbortController()
    try {
      await untilAborted(Promise.race([woken.promise, sleep(Math.max(0, ms), undefined, { signal: nap.signal })]), signal)
    } finally {
      this.#resolve = null
      nap.abort()
    }
  }

  wake(): void {
    this.#pending = true
    const r = this.#resolve
    this.#resolve = null
    r?.()
  }
}

export class Wakeups {
  readonly #bus: Bus
  readonly #log: Logger
  readonly #events: Events
  readonly #waiters = new Set<Waiter>()
  #off: (() => void)[] = []

  constructor(deps: { bus: Bus; events: Events; log: Logger }) {
    this.#bus = deps.bus
    this.#events = deps.events
    this.#log = deps.log
  }

  start(): void {
    this.#off.push(
      this.#bus.subscribe(WAKE_CHANNEL, (data, meta) => {
        // Releases made here already woke the local waiters.
        if (!meta.local) this.#receive(data)
      }),
      this.#events.on('bus:gap', () => this.wakeAll()),
    )
  }

  stop(): void {
    for (const off of this.#off) off()
    this.#off = []
    this.wakeAll()
  }

  add(resource: Resource): Waiter {
    const w = new Waiter(resource)
    this.#waiters.add(w)
    return w
  }

  remove(w: Waiter): void {
    this.#waiters.delete(w)
  }

  get waiting(): number {
    return this.#waiters.size
  }

  wakeAll(): void {
    for (const w of this.#waiters) w.wake()
  }

  /** Wakes the local waiters `targets` may unblock, and, when `publish`, those of every other instance. */
  released(space: Space, targets: readonly string[], publish: boolean): void {
    if (targets.length === 0) return
    this.#wakeLocal(space, targets)
    if (!publish) return
    let data = JSON.stringify([space, targets])
    if (data.length > MAX_MESSAGE_CHARS) data = '*'
    // A lost wake-up only delays waiters elsewhere until their safety poll.
    this.#bus.notify(WAKE_CHANNEL, data)
  }

  #wakeLocal(space: Space, targets: readonly string[]): void {
    for (const w of this.#waiters) {
      if (w.resource.space !== space) continue
      if (targets.some((t) => related(space, t, w.resource.target))) w.wake()
    }
  }

  #receive(data: string): void {
    if (data === '*') return this.wakeAll()
    try {
      const [space, targets] = JSON.parse(data) as [Space, string[]]
      if ((space === 0 || space === 1) && Array.isArray(targets)) return this.#wakeLocal(space, targets)
    } catch {
      // fall through
    }
    this.#log.warn({ data: data.slice(0, 100) }, 'malformed wake-up; waking every local waiter')
    this.wakeAll()
  }
}
