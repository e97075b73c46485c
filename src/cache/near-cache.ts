/**
 * Near cache: a local LRU (lru-cache) per instance whose writes invalidate every peer's copy over
 * the bus. A value is never re-cached after an invalidation that arrived while it was loading
 * (loads started before an invalidation are marked stale and their result is returned but not
 * kept), and a bus gap — a possibly lost invalidation — flushes the cache instead of leaving it
 * silently stale.
 */
import { LRUCache } from 'lru-cache'
import type { Bus } from '../bus/bus.js'
import { ChorusError, toError } from '../errors.js'
import type { Events } from '../events.js'
import { checkKey } from '../state/codec.js'

export interface NearCacheOptions<T> {
  /** Most entries kept on this instance. Default 10 000. */
  max?: number
  /** Time to live of an entry on this instance, in ms. Default: none. */
  ttlMs?: number
  /** Default loader for `getOrLoad`. */
  load?: (key: string, signal: AbortSignal) => Promise<T>
}

export interface CacheStats {
  hits: number
  misses: number
  loads: number
  /** Loads whose result was not kept because an invalidation arrived meanwhile. */
  staleLoads: number
  invalidations: number
  flushes: number
  size: number
}

interface Flight<T> {
  promise: Promise<T>
  stale: boolean
}

type Message = { d: string[] } | { c: 1 }

export class NearCache<T extends NonNullable<unknown>> {
  readonly name: string
  readonly #lru: LRUCache<string, T>
  readonly #bus: Bus
  readonly #channel: string
  readonly #load: NearCacheOptions<T>['load']
  readonly #flights = new Map<string, Flight<T>>()
  readonly #stats = { hits: 0, misses: 0, loads: 0, staleLoads: 0, invalidations: 0, flushes: 0 }
  readonly #off: (() => void)[] = []
  #closed = false

  constructor(name: string, opts: NearCacheOptions<T>, deps: { bus: Bus; events: Events }) {
    this.name = name
    this.#bus = deps.bus
    this.#channel = `chorus.cache.${name}`
    this.#load = opts.load
    const max = opts.max ?? 10_000
    if (!Number.isInteger(max) || max < 1) throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', ['cache.max', 'must be a positive integer'], { details: { option: 'cache.max' } })
    if (opts.ttlMs !== undefined && (!Number.isInteger(opts.ttlMs) || opts.ttlMs < 1)) {
      throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', ['cache.ttlMs', 'must be a positive integer'], { details: { option: 'cache.ttlMs' } })
    }
    this.#lru = new LRUCache<string, T>({ max, ...(opts.ttlMs ? { ttl: opts.ttlMs } : {}) })
    this.#off.push(this.#bus.subscribe(this.#channel, (data, meta) => {
      if (!meta.local) this.#apply(data)
    }))
    this.#off.push(deps.events.on('bus:gap', () => this.flush()))
    this.#off.push(deps.events.on('member:self:isolated', () => this.flush()))
  }

  get stats(): CacheStats {
    return { ...this.#stats, size: this.#lru.size }
  }

  /** The local value, if any. Never touches the network. */
  get(key: string): T | undefined {
    const v = this.#lru.get(key)
    if (v === undefined) this.#stats.misses++
    else this.#stats.hits++
    return v
  }

  has(key: string): boolean {
    return this.#lru.has(key)
  }

  /** Keeps `value` here and invalidates every peer's copy; resolves once the invalidation left. */
  async set(key: string, value: T): Promise<void> {
    checkKey(key)
    if (value === undefined || value === null) throw new ChorusError('CHORUS_ERR_STATE_VALUE_NOT_SERIALIZABLE', ['cache values cannot be null or undefined'])
    this.#invalidateLocal([key])
    this.#lru.set(key, value)
    await this.#publish({ d: [key] })
  }

  /** Removes the key here and on every peer. */
  async delete(...keys: string[]): Promise<void> {
    for (const k of keys) checkKey(k)
    this.#invalidateLocal(keys)
    await this.#publish({ d: keys })
  }

  /** Empties this cache on every instance. */
  async clear(): Promise<void> {
    this.#flushLocal()
    await this.#publish({ c: 1 })
  }

  /**
   * Returns the local value, or loads it once for all concurrent callers on this instance. A load
   * overtaken by an invalidation of its key is returned to its callers but not kept.
   */
  getOrLoad(key: string, loader?: (key: string, signal: AbortSignal) => Promise<T>): Promise<T> {
    checkKey(key)
    const hit = this.#lru.get(key)
    if (hit !== undefined) {
      this.#stats.hits++
      return Promise.resolve(hit)
    }
    this.#stats.misses++
    const running = this.#flights.get(key)
    if (running) return running.promise
    const load = loader ?? this.#load
    if (!load) return Promise.reject(new ChorusError('CHORUS_ERR_OPTIONS_INVALID', ['cache.load', `cache "${this.name}" has no loader`]))
    this.#stats.loads++
    const flight: Flight<T> = { stale: false, promise: undefined as unknown as Promise<T> }
    flight.promise = (async () => {
      try {
        const value = await load(key, AbortSignal.timeout(60_000))
        if (flight.stale) this.#stats.staleLoads++
        else if (value !== undefined && value !== null && !this.#closed) this.#lru.set(key, value)
        return value
      } finally {
        if (this.#flights.get(key) === flight) this.#flights.delete(key)
      }
    })()
    this.#flights.set(key, flight)
    return flight.promise
  }

  /** Drops every local entry (and marks running loads stale) without telling peers. */
  flush(): void {
    this.#stats.flushes++
    this.#flushLocal()
  }

  close(): void {
    this.#closed = true
    for (const off of this.#off) off()
    this.#lru.clear()
  }

  #apply(data: string): void {
    let msg: Message
    try {
      msg = JSON.parse(data) as Message
    } catch {
      this.flush()
      return
    }
    if ('c' in msg) this.#flushLocal()
    else if (Array.isArray(msg.d)) this.#invalidateLocal(msg.d.filter((k): k is string => typeof k === 'string'))
    this.#stats.invalidations++
  }

  #invalidateLocal(keys: string[]): void {
    for (const key of keys) {
      this.#lru.delete(key)
      const flight = this.#flights.get(key)
      if (flight) {
        flight.stale = true
        this.#flights.delete(key)
      }
    }
  }

  #flushLocal(): void {
    this.#lru.clear()
    for (const flight of this.#flights.values()) flight.stale = true
    this.#flights.clear()
  }

  async #publish(msg: Message): Promise<void> {
    try {
      await this.#bus.publish(this.#channel, JSON.stringify(msg))
    } catch (err) {
      throw toError(err)
    }
  }
}
