/**
 * The in-memory transport: every `MemoryTransport` on one `MemoryHub` hears every other, inside one
 * process. For a single-process deployment (`bus: { url: 'memory:' }`, on the process-wide hub of
 * the cluster's name, `processHub(prefix)`) and for tests. It keeps the transport contract like a broker would: delivery a
 * macrotask later, per-publisher order, every member (the sender too) receives, and limits:
 * - a message whose encoded size (`frameBytes`) exceeds `maxEnvelopeBytes` is refused
 *   (`CHORUS_ERR_BUS_PAYLOAD_TOO_LARGE`);
 * - a receiver with more than `maxPendingBytes` waiting is cut off like a broker cuts a slow
 *   consumer: its waiting messages are dropped and it reports `disconnected` then `reconnected`
 *   (a gap), so nothing grows without bound and nothing is lost silently.
 * Sending queues nothing (it hands the message to every receiver at once), so `queuedBytes` is 0.
 * For tests: `hub.drop(n)` loses the next n messages, `hub.interrupt()` is a broker restart for
 * every member, `transport.reconnect()` one member's reconnect.
 */
import { ChorusError } from '../errors.js'
import { frameBytes } from './frame.js'
import type { Envelope, Transport, TransportHandlers } from './transport.js'

export interface MemoryHubOptions {
  /** Largest message, measured as its encoded frame. Default: 64 MiB + 1 KiB (the bus's own ceiling and a header). */
  maxEnvelopeBytes?: number
  /** Bytes that may wait for one receiver before it is cut off (a gap). Default: 64 MiB. */
  maxPendingBytes?: number
}

export class MemoryHub {
  readonly maxEnvelopeBytes: number
  readonly maxPendingBytes: number
  readonly #members = new Set<MemoryTransport>()
  #dropNext = 0
  #down = false

  constructor(opts: MemoryHubOptions = {}) {
    this.maxEnvelopeBytes = opts.maxEnvelopeBytes ?? 64 * 1024 * 1024 + 1024
    this.maxPendingBytes = opts.maxPendingBytes ?? 64 * 1024 * 1024
  }

  join(t: MemoryTransport): void {
    this.#members.add(t)
  }

  leave(t: MemoryTransport): void {
    this.#members.delete(t)
  }

  /** Members joined and not closed. */
  get size(): number {
    return this.#members.size
  }

  /** The next `n` messages sent on this hub reach nobody. */
  drop(n: number): void {
    this.#dropNext += n
  }

  /**
   * A broker restart: every member loses its connection now, messages sent until the hub is back
   * (a macrotask later) reach nobody, then every member reports it receives again.
   */
  async interrupt(): Promise<void> {
    this.#down = true
    const members = [...this.#members]
    for (const m of members) m.lose(new Error('the memory hub restarted'), false)
    await new Promise((r) => setImmediate(r))
    this.#down = false
    for (const m of members) m.regain()
  }

  broadcast(envelope: Envelope, bytes: number): void {
    if (this.#down) return
    if (this.#dropNext > 0) {
      this.#dropNext--
      return
    }
    for (const m of this.#members) m.receive(envelope, bytes)
  }
}

const processHubs = new Map<string, MemoryHub>()

/** The process-wide hub of cluster `name` (its prefix): `memory:` bus URLs use it, so clusters in one process stay apart. */
export function processHub(name: string): MemoryHub {
  let hub = processHubs.get(name)
  if (!hub) processHubs.set(name, (hub = new MemoryHub()))
  return hub
}

/** The process-wide hub of the default cluster name, `chorus`. */
export const defaultHub = processHub('chorus')

export class MemoryTransport implements Transport {
  readonly #hub: MemoryHub
  #handlers: TransportHandlers | null = null
  #queue: Envelope[] = []
  #pendingBytes = 0
  #timer: NodeJS.Immediate | null = null
  /** Cut off (slow receiver or hub restart) and not yet told it receives again. */
  #lost = false
  /** The cut ends at the next delivery turn (a slow receiver), not when the hub is back. */
  #regainOnTurn = false
  #closed = false

  constructor(hub: MemoryHub = defaultHub) {
    this.#hub = hub
  }

  get queuedBytes(): number {
    return 0
  }

  get maxEnvelopeBytes(): number {
    return this.#hub.maxEnvelopeBytes
  }

  async start(handlers: TransportHandlers): Promise<void> {
    if (this.#closed) throw new ChorusError('CHORUS_ERR_BUS_CLOSED')
    this.#handlers = handlers
    this.#hub.join(this)
  }

  send(envelope: Envelope): Promise<void> {
    if (this.#closed) return Promise.reject(new ChorusError('CHORUS_ERR_BUS_CLOSED'))
    const bytes = frameBytes(envelope)
    const limit = this.#hub.maxEnvelopeBytes
    if (bytes > limit) return Promise.reject(new ChorusError('CHORUS_ERR_BUS_PAYLOAD_TOO_LARGE', [bytes, limit], { details: { bytes, limit } }))
    this.#hub.broadcast(envelope, bytes)
    return Promise.resolve()
  }

  receive(envelope: Envelope, bytes: number): void {
    if (this.#lost || !this.#handlers) return
    if (this.#pendingBytes + bytes > this.#hub.maxPendingBytes) {
      this.lose(new Error(`more than ${this.#hub.maxPendingBytes} bytes waited for this receiver`), true)
      this.#schedule()
      return
    }
    this.#queue.push(envelope)
    this.#pendingBytes += bytes
    this.#schedule()
  }

  #schedule(): void {
    this.#timer ??= setImmediate(() => {
      this.#timer = null
      const batch = this.#queue
      this.#queue = []
      this.#pendingBytes = 0
      for (const e of batch) {
        try {
          this.#handlers?.deliver(e)
        } catch {
          // A receiver that throws does not stop delivery; the bus logs its own subscribers' failures.
        }
      }
      if (this.#regainOnTurn) this.regain()
    })
  }

  /** This member's connection dropped: what waited for it is gone. */
  lose(error: Error, regainOnTurn: boolean): void {
    if (this.#lost || !this.#handlers) return
    this.#lost = true
    this.#regainOnTurn = regainOnTurn
    this.#queue = []
    this.#pendingBytes = 0
    this.#handlers.disconnected(error)
  }

  /** This member receives again (after `lose`). */
  regain(): void {
    if (!this.#lost) return
    this.#lost = false
    this.#handlers?.reconnected()
  }

  /** Simulates a dropped and restored receiving connection of this member. */
  reconnect(): void {
    this.lose(new Error('simulated disconnect'), false)
    this.regain()
  }

  async close(): Promise<void> {
    this.#closed = true
    this.#hub.leave(this)
    if (this.#timer) clearImmediate(this.#timer)
    this.#timer = null
    this.#queue = []
    this.#pendingBytes = 0
    this.#handlers = null
  }
}
