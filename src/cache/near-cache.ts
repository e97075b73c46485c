/**
 * Near cache: a local LRU (lru-cache) per instance whose writes invalidate every peer's copy over
 * the bus. A value is never re-cached after an invalidation that arrived while it was loading
 * (loads started before an invalidation are marked stale and their result is returned but not
 * kept), and a bus gap — a possibly lost invalidation — flushes the cache instead of leaving it
 * silently stale. `null` is a value like any other (negative caching: "we looked, there is none");
 * `undefined` means "not found" and is never kept.
 */
import { LRUCache } from 'lru-cache'
import type { Bus } from '../bus/bus.js'
import { channels } from '../bus/channels.js'
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

/**
 * What a cache may hold: anything but `undefined`, which means "not found". Include `null` in `T`
 * to cache the absence of a value (`cluster.cache<User | null>('users')`).
 */
export type Cacheable = NonNullable<unknown> | null

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

/** How `null` is kept in the LRU, which holds only non-null values. */
const NULL: unique symbol = Symbol('chorus.cache.null')
type Stored<T> = Exclude<T, null> | typeof NULL
const store = <T>(value: T): Stored<T> => (value === null ? NULL : value) as Stored<T>
const unstore = <T>(stored: Stored<T> | undefined): T | undefined => (stored === NULL ? null : stored) as T | undefined

export class NearCache<T extends Cacheable> {
  readonly name: string
  readonly #lru: LRUCache<string, Stored<T> & NonNullable<unknown>>
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
    this.#channel = channels.cache(name)
    this.#load = opts.load
    const max = opts.max ?? 10_000
    if (!Number.isInteger(max) || max < 1) throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', ['cache.max', 'must be a positive integer'], { details: { option: 'cache.max' } })
    if (opts.ttlMs !== undefined && (!Number.isInteger(opts.ttlMs) || opts.ttlMs < 1)) {
      throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', ['cache.ttlMs', 'must be a positive integer'], { details: { option: 'cache.ttlMs' } })
    }
    this.#lru = new LRUCache<string, Stored<T> & NonNullable<unknown>>({ max, ...(opts.ttlMs ? { ttl: opts.ttlMs } : {}) })
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
    return unstore<T>(v)
  }

  has(key: string): boolean {
    return this.#lru.has(key)
  }

  /**
   * Keeps `value` here and invalidates every peer's copy; resolves once the invalidation left.
   * `null` is kept (negative caching); `undefined` is refused — use `delete`.
   */
  async set(key: string, value: T): Promise<void> {
    checkKey(key)
    if (value === undefined) throw new ChorusError('CHORUS_ERR_STATE_VALUE_NOT_SERIALIZABLE', ['a cache value cannot be undefined (it means "not found"; use delete)'])
    this.#invalidateLocal([key])
    this.#lru.set(key, store(value))
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
   * overtaken by an invalidation of its key is returned to its callers but not kept. A loader's
   * `null` is kept like any value; its `undefined` ("not found") is returned but not kept.
   */
  getOrLoad(key: string, loader?: (key: string, signal: AbortSignal) => Promise<T>): Promise<T> {
    checkKey(key)
    const hit = this.#lru.get(key)
    if (hit !== undefined) {
      this.#stats.hits++
      return Promise.resolve(unstore<T>(hit) as T)
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
        else if (value !== undefined && !this.#closed) this.#lru.set(key, store(value))
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
