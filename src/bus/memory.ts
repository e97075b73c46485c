/**
 * In-memory transport for unit tests: several `Bus` instances in one process share a `MemoryHub`.
 * Delivery is asynchronous (a macrotask later) and keeps per-publisher order, like the real thing.
 * `hub.drop(n)` loses the next n messages and `hub.disconnect(t)` simulates a reconnect, so gap
 * handling can be tested without a database.
 */
import type { Envelope, Transport, TransportHandlers } from './transport.js'

export class MemoryHub {
  readonly #members = new Set<MemoryTransport>()
  #dropNext = 0

  join(t: MemoryTransport): void {
    this.#members.add(t)
  }

  leave(t: MemoryTransport): void {
    this.#members.delete(t)
  }

  /** The next `n` messages sent on this hub reach nobody. */
  drop(n: number): void {
    this.#dropNext += n
  }

  broadcast(envelope: Envelope): void {
    if (this.#dropNext > 0) {
      this.#dropNext--
      return
    }
    for (const m of this.#members) m.receive(envelope)
  }
}

export class MemoryTransport implements Transport {
  readonly #hub: MemoryHub
  #handlers: TransportHandlers | null = null
  #queue: Envelope[] = []
  #scheduled = false

  constructor(hub: MemoryHub) {
    this.#hub = hub
  }

  get queuedBytes(): number {
    return 0
  }

  async start(handlers: TransportHandlers): Promise<void> {
    this.#handlers = handlers
    this.#hub.join(this)
  }

  send(envelope: Envelope): Promise<void> {
    this.#hub.broadcast(envelope)
    return Promise.resolve()
  }

  receive(envelope: Envelope): void {
    this.#queue.push(envelope)
    if (this.#scheduled) return
    this.#scheduled = true
    setImmediate(() => {
      this.#scheduled = false
      const batch = this.#queue
      this.#queue = []
      for (const e of batch) this.#handlers?.deliver(e)
    })
  }

  /** Simulates a dropped and restored receiving connection. */
  reconnect(): void {
    this.#handlers?.disconnected(new Error('simulated disconnect'))
    this.#handlers?.reconnected()
  }

  async close(): Promise<void> {
    this.#hub.leave(this)
    this.#handlers = null
  }
}
