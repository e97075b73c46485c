/**
 * The socket side of one STOMP connection, below the protocol: frames leave as WebSocket text
 * messages, corked per tick so a burst costs one system call per connection rather than one per
 * message; the bytes waiting for the client are reported to the caller, who bounds them (slow
 * consumer); heart-beats go out when nothing else did, and a client silent past its allowance is
 * reported. It knows no STOMP command: the connection decides what a full buffer or silence means.
 */
import type { Duplex } from 'node:stream'
import { WebSocket } from 'ws'

const TEXT = { binary: false } as const
/** Most bytes held back while corked; beyond, they go to the socket at once. */
const CORK_BYTES = 64 * 1024
/** How long a closing socket may take to finish its close handshake before it is cut. */
const CLOSE_GRACE_MS = 1000

export interface WireEvents {
  /** Bytes from the client (one WebSocket message). */
  data(chunk: Buffer): void
  /** The socket closed or failed. */
  closed(): void
}

export class Wire {
  readonly #ws: WebSocket
  /** The upgraded socket under `ws` (corked while a tick's frames are written), if it can cork. */
  readonly #socket: Duplex | null
  /** Bytes waiting while corked before they are handed on at once. */
  readonly #flushAt: number
  #corked = false
  #lastReceived = Date.now()
  #lastSent = Date.now()
  #timers: NodeJS.Timeout[] = []

  constructor(ws: WebSocket, socket: Duplex | undefined, maxPendingBytes: number, on: WireEvents) {
    this.#ws = ws
    this.#socket = socket && typeof socket.cork === 'function' ? socket : null
    this.#flushAt = Math.min(CORK_BYTES, maxPendingBytes)
    ws.on('message', (data: Buffer | ArrayBuffer | Buffer[]) => {
      this.#lastReceived = Date.now()
      on.data(Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data))
    })
    ws.on('close', () => on.closed())
    ws.on('error', () => on.closed())
  }

  get open(): boolean {
    return this.#ws.readyState === WebSocket.OPEN
  }

  /**
   * Queues a frame for the client and returns the bytes now waiting for it. Frames written in one
   * tick leave together: the socket is corked at the first and uncorked on the next tick, or as soon
   * as a batch's worth is waiting.
   */
  write(frame: string | Buffer): number {
    if (!this.open) return 0
    this.#cork()
    this.#ws.send(frame, TEXT)
    this.#lastSent = Date.now()
    if (this.#corked && this.#ws.bufferedAmount >= this.#flushAt) this.#uncork()
    return this.#ws.bufferedAmount
  }

  /** Sends a last frame (an ERROR before closing), behind whatever was written before it. */
  sendLast(frame: string): void {
    if (this.open) this.#ws.send(frame)
  }

  /** Runs `fn` after `ms` unless the wire is stopped first. */
  after(ms: number, fn: () => void): void {
    const t = setTimeout(fn, ms)
    t.unref()
    this.#timers.push(t)
  }

  /**
   * Sends a heart-beat every `outgoing` ms in which nothing else was sent, and calls `silent` when
   * nothing arrived for twice `incoming` (plus half a second). Zero turns either off.
   */
  heartbeats(outgoing: number, incoming: number, silent: () => void): void {
    if (outgoing > 0) {
      const t = setInterval(() => {
        if (Date.now() - this.#lastSent >= outgoing * 0.9 && this.open) {
          this.#ws.send('\n')
          this.#lastSent = Date.now()
        }
      }, outgoing)
      t.unref()
      this.#timers.push(t)
    }
    if (incoming > 0) {
      const allowance = incoming * 2 + 500
      const t = setInterval(() => {
        if (Date.now() - this.#lastReceived > allowance) silent()
      }, incoming)
      t.unref()
      this.#timers.push(t)
    }
  }

  /** Closes with a WebSocket close code, cutting the socket if the handshake does not finish soon. */
  close(code: number, reason: string): void {
    this.#uncork()
    try {
      this.#ws.close(code, reason)
    } catch {
      this.#ws.terminate()
    }
    setTimeout(() => this.#ws.terminate(), CLOSE_GRACE_MS).unref()
  }

  /** Cuts the socket at once. */
  terminate(): void {
    this.#ws.terminate()
  }

  /** Stops the timers (heart-beats and `after`). */
  stop(): void {
    for (const t of this.#timers) clearTimeout(t)
    this.#timers = []
  }

  #cork(): void {
    if (this.#corked || this.#socket === null) return
    this.#corked = true
    this.#socket.cork()
    process.nextTick(this.#uncorkLater)
  }

  /** Hands what was corked to the socket (which writes what the kernel takes and buffers the rest). */
  #uncork(): void {
    if (!this.#corked) return
    this.#corked = false
    this.#socket!.uncork()
  }

  readonly #uncorkLater = (): void => this.#uncork()
}
