/**
 * Slows down password guessing: after a few failed attempts from one client address, every further
 * attempt is refused unchecked until a delay has passed, and the delay doubles with each failure
 * (capped). A success clears the address. Addresses are kept in a bounded LRU, so a flood of
 * addresses cannot grow memory without limit.
 */
import { LRUCache } from 'lru-cache'
import { z } from 'zod'

const whole = z.number().int('must be a whole number').positive('must be positive')

/** The throttle's options (part of the dashboard's; unknown keys refused). */
export const throttleSchema = z.strictObject({
  /** Failures allowed before the first delay. Default 5. */
  freeFailures: whole.optional(),
  /** The first delay; doubles with each further failure. Default 1 s. */
  baseDelayMs: whole.optional(),
  /** The longest delay. Default 15 minutes. */
  maxDelayMs: whole.optional(),
  /** Addresses remembered at most. Default 10 000. */
  maxClients: whole.max(10_000_000, 'must be at most 10000000').optional(),
})

export type ThrottleOptions = z.input<typeof throttleSchema>

interface Entry {
  failures: number
  blockedUntil: number
}

export class Throttle {
  readonly #free: number
  readonly #base: number
  readonly #max: number
  readonly #clients: LRUCache<string, Entry>

  constructor(opts: ThrottleOptions = {}) {
    this.#free = opts.freeFailures ?? 5
    this.#base = opts.baseDelayMs ?? 1000
    this.#max = opts.maxDelayMs ?? 15 * 60_000
    this.#clients = new LRUCache({ max: opts.maxClients ?? 10_000, ttl: Math.max(this.#max * 2, 60 * 60_000) })
  }

  /** Seconds the client must still wait before its next attempt is checked; 0 when it may try now. */
  retryAfterSec(client: string): number {
    const e = this.#clients.get(client)
    if (!e) return 0
    const left = e.blockedUntil - Date.now()
    return left > 0 ? Math.ceil(left / 1000) : 0
  }

  failure(client: string): void {
    const e = this.#clients.get(client) ?? { failures: 0, blockedUntil: 0 }
    e.failures++
    if (e.failures >= this.#free) {
      const delay = Math.min(this.#max, this.#base * 2 ** (e.failures - this.#free))
      e.blockedUntil = Date.now() + delay
    }
    this.#clients.set(client, e)
  }

  success(client: string): void {
    this.#clients.delete(client)
  }
}
