/**
 * The socket side of one STOMP connection, below the protocol: frames leave as WebSocket text
 * messages, framed here (server frames are never masked, so a message's WebSocket frame is the same
 * bytes for every subscriber and is built once: `textFrame`), and the frames of one turn of the
 * event loop leave in one socket write per connection, flushed for every connection together once
 * the turn's I/O callbacks have run (`setImmediate`: bus messages that arrived together go out
 * together) — a burst costs one system call per connection, not one per message, and no
 * per-message work in `ws`.
 * The bytes waiting for the client are reported to the caller, who bounds them (slow consumer);
 * heart-beats go out when nothing else did, and a client silent past its allowance is reported. It
 * knows no STOMP command: the connection decides what a full buffer or silence means.
 *
 * Written by hand rather than with `ws.send`: `ws` frames and writes each message to each socket
 * (a header allocation and two stream writes per delivery), which was the largest share of a
 * fan-out's CPU. `ws` still owns the handshake, reading, control frames and the close handshake;
 * frames written here go to the same socket in order, and anything pending leaves before `ws`
 * writes a close or a last frame.
 */
import type { Duplex } from 'node:stream'
import { WebSocket } from 'ws'

/** A complete WebSocket text frame (FIN, opcode 1, unmasked), ready for the socket. */
export type WsFrame = Buffer & { readonly __wsFrame: true }

/** Frames `payload` (a STOMP frame) as one WebSocket text message. */
export function textFrame(payload: string | Buffer): WsFrame {
  const length = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length
  const head = length < 126 ? 2 : length < 65536 ? 4 : 10
  const out = Buffer.allocUnsafe(head + length)
  out[0] = 0x81
  if (head === 2) out[1] = length
  else if (head === 4) {
    out[1] = 126
    out.writeUInt16BE(length, 2)
  } else {
    out[1] = 127
    out.writeUInt32BE(Math.floor(length / 2 ** 32), 2)
    out.writeUInt32BE(length >>> 0, 6)
  }
  if (typeof payload === 'string') out.write(payload, head, 'utf8')
  else payload.copy(out, head)
  return out as WsFrame
}

/** The payload of a frame made by `textFrame`. */
function payloadOf(frame: WsFrame): Buffer {
  const len = frame[1]!
  return frame.subarray(len < 126 ? 2 : len === 126 ? 4 : 10)
}

/** Most bytes held back within a turn of the event loop; beyond, they go to the socket at once. */
const BATCH_BYTES = 64 * 1024
/** How long a closing socket may take to finish its close handshake before it is cut. */
const CLOSE_GRACE_MS = 1000
const HEARTBEAT = textFrame('\n')

/** Wires with frames waiting, flushed together after this turn's I/O (one scheduled callback, not one per wire). */
let waiting: Wire[] = []
function flushWaiting(): void {
  const wires = waiting
  waiting = []
  for (const w of wires) w.flush()
}

export interface WireEvents {
  /** Bytes from the client (one WebSocket message). */
  data(chunk: Buffer): void
  /** The socket closed or failed. */
  closed(): void
}

export class Wire {
  readonly #ws: WebSocket
  /** The upgraded socket under `ws`, written directly; null where there is none (then `ws.send`). */
  readonly #socket: Duplex | null
  /** Bytes waiting within a turn before they are handed on at once. */
  readonly #flushAt: number
  #pending: Buffer[] = []
  #pendingBytes = 0
  #lastReceived = Date.now()
  #lastSent = Date.now()
  #timers: NodeJS.Timeout[] = []

  constructor(ws: WebSocket, socket: Duplex | undefined, maxPendingBytes: number, on: WireEvents) {
    this.#ws = ws
    this.#socket = socket && typeof socket.write === 'function' ? socket : null
    this.#flushAt = Math.min(BATCH_BYTES, maxPendingBytes)
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

  /** Queues a STOMP frame for the client; returns the bytes now waiting for it. */
  write(frame: string | Buffer): number {
    return this.writeFrame(textFrame(frame))
  }

  /**
   * Queues a WebSocket frame (shared between connections: never modified) and returns the bytes now
   * waiting for the client. A turn's frames leave together after its I/O, or as soon as a batch's
   * worth is waiting.
   */
  writeFrame(frame: WsFrame): number {
    if (!this.open) return 0
    if (this.#socket === null) {
      this.#ws.send(payloadOf(frame), { binary: false })
      this.#lastSent = Date.now()
      return this.#ws.bufferedAmount
    }
    if (this.#pending.length === 0) {
      if (waiting.length === 0) setImmediate(flushWaiting)
      waiting.push(this)
    }
    this.#pending.push(frame)
    this.#pendingBytes += frame.length
    if (this.#pendingBytes >= this.#flushAt) this.flush()
    return this.#pendingBytes + this.#ws.bufferedAmount
  }

  /** Hands what is waiting to the socket (which writes what the kernel takes and buffers the rest). */
  flush(): void {
    const n = this.#pending.length
    if (n === 0) return
    const data = n === 1 ? this.#pending[0]! : Buffer.concat(this.#pending, this.#pendingBytes)
    this.#pending = []
    this.#pendingBytes = 0
    if (!this.open || !this.#socket!.writable) return
    this.#socket!.write(data)
    this.#lastSent = Date.now()
  }

  /** Sends a last frame (an ERROR before closing), behind whatever was written before it. */
  sendLast(frame: string): void {
    this.flush()
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
        if (Date.now() - this.#lastSent >= outgoing * 0.9 && this.open) this.writeFrame(HEARTBEAT)
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
    this.flush()
    try {
      this.#ws.close(code, reason)
    } catch {
      this.#ws.terminate()
    }
    setTimeout(() => this.#ws.terminate(), CLOSE_GRACE_MS).unref()
  }

  /** Cuts the socket at once. */
  terminate(): void {
    this.#pending = []
    this.#pendingBytes = 0
    this.#ws.terminate()
  }

  /** Stops the timers (heart-beats and `after`). */
  stop(): void {
    for (const t of this.#timers) clearTimeout(t)
    this.#timers = []
  }
}
