/**
 * The bus: named channels over a `Transport`. It numbers each message per publisher so every
 * receiver can tell when it may have missed something, and turns that (and transport reconnects)
 * into `bus:gap` events for the subsystems above, which react (flush caches, notify clients).
 * Delivery is at-most-once and ordered per publisher; every instance receives its own messages.
 */
import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import { ChorusError, toError } from '../errors.js'
import type { Events } from '../events.js'
import { frameBytes } from './frame.js'
import type { Envelope, Transport } from './transport.js'

export type BusHandler = (data: string, meta: { publisher: string; seq: number; local: boolean }) => void

export interface BusOptions {
  instanceId: string
  maxPayloadBytes: number
  maxQueueBytes: number
  events: Events
  log: Logger
}

export interface BusStats {
  published: number
  delivered: number
  gaps: number
  reconnects: number
  /** Publishes that failed (refused: queue full, closed, too large; or not sent: connection lost). */
  failed: number
}

const CHANNEL = /^[A-Za-z0-9_.:/@*-]{1,200}$/
/** A publisher not heard from for this long is forgotten (its next message starts a new sequence). */
const FORGET_AFTER_MS = 10 * 60_000

export class Bus {
  /** Unique per bus instance (so per process start), names this instance as a publisher. */
  readonly publisherId: string
  readonly #transport: Transport
  readonly #opts: BusOptions
  readonly #handlers = new Map<string, Set<BusHandler>>()
  readonly #lastSeq = new Map<string, { seq: number; at: number }>()
  #seq = 0
  #closed = false
  #forgetTimer: NodeJS.Timeout | null = null
  readonly stats: BusStats = { published: 0, delivered: 0, gaps: 0, reconnects: 0, failed: 0 }

  constructor(transport: Transport, opts: BusOptions) {
    this.#transport = transport
    this.#opts = opts
    this.publisherId = `${opts.instanceId.replace(/\n/g, '')}/${randomBytes(6).toString('base64url')}`
  }

  async start(): Promise<void> {
    await this.#transport.start({
      deliver: (e) => this.#deliver(e),
      reconnected: () => {
        this.stats.reconnects++
        this.stats.gaps++
        this.#lastSeq.clear()
        this.#opts.events.emit('bus:connection:restored', {})
        this.#opts.events.emit('bus:gap', { reason: 'reconnect' })
      },
      disconnected: (error) => this.#opts.events.emit('bus:connection:lost', { error: error.message }),
      lost: (publisher, seq) => {
        this.stats.gaps++
        const known = this.#lastSeq.get(publisher)
        if (!known || seq > known.seq) this.#lastSeq.set(publisher, { seq, at: Date.now() })
        this.#opts.events.emit('bus:gap', { reason: 'payload-expired', publisher, missed: 1 })
      },
    })
    this.#forgetTimer = setInterval(() => {
      const cutoff = Date.now() - FORGET_AFTER_MS
      for (const [p, v] of this.#lastSeq) if (v.at < cutoff) this.#lastSeq.delete(p)
    }, 60_000)
    this.#forgetTimer.unref()
  }

  /**
   * Sends `data` to every subscriber of `channel` on every instance (this one included).
   * Throws synchronously-typed errors (bad channel, too large, queue full) as a rejected promise;
   * resolves once the message has left this instance. Callers may ignore the promise.
   */
  publish(channel: string, data: string): Promise<void> {
    let p: Promise<void>
    try {
      if (this.#closed) throw new ChorusError('CHORUS_ERR_BUS_CLOSED')
      validateChannel(channel)
      if (typeof data !== 'string') throw new ChorusError('CHORUS_ERR_BUS_PAYLOAD_INVALID', [typeof data])
      const bytes = Buffer.byteLength(data)
      if (bytes > this.#opts.maxPayloadBytes) {
        throw new ChorusError('CHORUS_ERR_BUS_PAYLOAD_TOO_LARGE', [bytes, this.#opts.maxPayloadBytes], { details: { bytes, limit: this.#opts.maxPayloadBytes } })
      }
      if (this.#transport.queuedBytes + bytes > this.#opts.maxQueueBytes) {
        throw new ChorusError('CHORUS_ERR_BUS_QUEUE_FULL', [this.#transport.queuedBytes, this.#opts.maxQueueBytes])
      }
      const envelope: Envelope = { publisher: this.publisherId, seq: this.#seq + 1, channel, data }
      const limit = this.#transport.maxEnvelopeBytes
      const frame = limit === undefined ? 0 : frameBytes(envelope)
      if (limit !== undefined && frame > limit) {
        // Refused before it is numbered: receivers see no gap for a message that never left.
        throw new ChorusError('CHORUS_ERR_BUS_PAYLOAD_TOO_LARGE', [frame, limit], { details: { bytes: frame, limit } })
      }
      this.#seq++
      this.stats.published++
      p = this.#transport.send(envelope, bytes)
    } catch (err) {
      p = Promise.reject(err)
    }
    p.catch((err: unknown) => {
      this.stats.failed++
      this.#opts.log.debug({ err, channel }, 'bus publish failed')
    })
    return p
  }

  /**
   * Fire-and-forget `publish` for notices whose loss receivers tolerate (wake-ups, refresh hints):
   * a failure is counted in `stats.failed` (metric `chorus_bus_publish_failures_total`) and logged
   * at debug, never thrown.
   */
  notify(channel: string, data: string): void {
    void this.publish(channel, data).catch(() => undefined)
  }

  /** Calls `handler` for every message on `channel`. Returns the unsubscribe function. */
  subscribe(channel: string, handler: BusHandler): () => void {
    validateChannel(channel)
    let set = this.#handlers.get(channel)
    if (!set) this.#handlers.set(channel, (set = new Set()))
    set.add(handler)
    return () => {
      const s = this.#handlers.get(channel)
      s?.delete(handler)
      if (s?.size === 0) this.#handlers.delete(channel)
    }
  }

  #deliver(e: Envelope): void {
    const known = this.#lastSeq.get(e.publisher)
    if (known) {
      if (e.seq <= known.seq) return
      if (e.seq > known.seq + 1) {
        const missed = e.seq - known.seq - 1
        this.stats.gaps++
        this.#opts.log.warn({ publisher: e.publisher, missed }, 'bus: sequence gap')
        this.#opts.events.emit('bus:gap', { reason: 'sequence', publisher: e.publisher, missed })
      }
    }
    this.#lastSeq.set(e.publisher, { seq: e.seq, at: Date.now() })
    const set = this.#handlers.get(e.channel)
    if (!set) return
    const meta = { publisher: e.publisher, seq: e.seq, local: e.publisher === this.publisherId }
    for (const handler of set) {
      this.stats.delivered++
      try {
        handler(e.data, meta)
      } catch (err) {
        this.#opts.log.error({ err: toError(err), channel: e.channel }, 'bus: a subscriber failed')
      }
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    if (this.#forgetTimer) clearInterval(this.#forgetTimer)
    await this.#transport.close()
    this.#handlers.clear()
  }
}

function validateChannel(channel: unknown): asserts channel is string {
  if (typeof channel !== 'string' || !CHANNEL.test(channel)) {
    throw new ChorusError('CHORUS_ERR_BUS_CHANNEL_INVALID', [JSON.stringify(channel), 'use 1-200 of A-Z a-z 0-9 _ . : / @ * -'])
  }
}
