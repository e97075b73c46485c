/**
 * Nonces seen within the replay window, in bounded memory. A request is accepted once per nonce;
 * entries leave when their timestamp falls out of the window (a replay is then refused as stale).
 * When the store is full, the oldest entry is forgotten and the floor rises to its timestamp:
 * requests stamped at or before the floor are refused, so forgetting never re-admits a replay.
 * Hand-written rather than an lru-cache: eviction must raise the floor, which a cache cannot say.
 */

export type NonceVerdict = 'ok' | 'replay' | 'too-old'

export class NonceStore {
  /** nonce → timestamp. */
  readonly #seen = new Map<string, number>()
  /** The same nonces in arrival order (roughly timestamp order), from `#head` on: a queue. */
  #order: string[] = []
  #stamps: number[] = []
  #head = 0
  readonly #windowMs: number
  readonly #max: number
  #floor = Number.NEGATIVE_INFINITY

  constructor(windowMs: number, max: number) {
    this.#windowMs = windowMs
    this.#max = max
  }

  get size(): number {
    return this.#seen.size
  }

  /** Records `nonce` (stamped `timestamp`) unless seen before or not newer than what was forgotten. */
  check(nonce: string, timestamp: number, now: number): NonceVerdict {
    // Entries past the window go (a replay of them is stale anyway); their timestamps stay refused,
    // which also guards against the clock stepping back.
    const limit = now - this.#windowMs
    while (this.#head < this.#order.length && this.#stamps[this.#head]! < limit) this.#forgetOldest()
    if (timestamp <= this.#floor) return 'too-old'
    if (this.#seen.has(nonce)) return 'replay'
    this.#seen.set(nonce, timestamp)
    this.#order.push(nonce)
    this.#stamps.push(timestamp)
    while (this.#seen.size > this.#max) this.#forgetOldest()
    return 'ok'
  }

  #forgetOldest(): void {
    const nonce = this.#order[this.#head]!
    const ts = this.#stamps[this.#head]!
    this.#head++
    this.#seen.delete(nonce)
    if (ts > this.#floor) this.#floor = ts
    // Compact the queue once most of it is behind the head.
    if (this.#head > 1024 && this.#head * 2 > this.#order.length) {
      this.#order = this.#order.slice(this.#head)
      this.#stamps = this.#stamps.slice(this.#head)
      this.#head = 0
    }
  }
}
