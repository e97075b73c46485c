/**
 * Keep-alive connections to one upstream (upstream-conn.ts): at most `limit` sockets (connecting,
 * busy or idle) and at most `maxWaiters` requests waiting for one, served first come first served.
 * Idle sockets are reused last in, first out, and closed before the instance's own keep-alive
 * timeout (its `Keep-Alive: timeout` hint less two seconds, at most 30 s). Written by hand, with
 * upstream-conn.ts: no maintained library relays by membership with sticky pins over raw pooled
 * sockets.
 */
import { Conn, type ConnOwner, type ConnState, type PoolTarget, UpstreamError } from './upstream-conn.js'

/** Requests that may wait for a socket of one upstream by default; more are refused (and tried elsewhere). */
export const MAX_WAITERS = 4096

/** An exchange waiting for a connection. */
export interface Waiter {
  ready(conn: Conn): void
  failed(err: UpstreamError): void
}

/** The keep-alive sockets to one upstream (see the file's comment). */
export class UpstreamPool implements ConnOwner {
  readonly #target: PoolTarget
  readonly #limit: number
  readonly #connectTimeoutMs: number
  readonly #maxHeaderBytes: number
  readonly #maxWaiters: number
  /** Idle sockets, the most recently used last. */
  readonly #idle: Conn[] = []
  readonly #waiters: Waiter[] = []
  #open = 0
  #closed = false
  #sweeper: NodeJS.Timeout | null = null

  constructor(target: PoolTarget, opts: { limit: number; connectTimeoutMs: number; maxHeaderBytes: number; maxWaiters?: number }) {
    this.#target = target
    this.#limit = opts.limit
    this.#maxWaiters = opts.maxWaiters ?? MAX_WAITERS
    this.#connectTimeoutMs = opts.connectTimeoutMs
    this.#maxHeaderBytes = opts.maxHeaderBytes
  }

  /** Sockets open (connecting, busy or idle), and requests waiting for one. */
  get size(): { open: number; idle: number; waiting: number } {
    return { open: this.#open, idle: this.#idle.length, waiting: this.#waiters.length }
  }

  /** A connection for `w`: an idle one, a new one, or the next one released; `w.failed` when none can be. */
  acquire(w: Waiter): void {
    if (this.#closed) return w.failed(new UpstreamError('POOL_CLOSED', 'the upstream left'))
    const now = Date.now()
    for (let conn = this.#idle.pop(); conn; conn = this.#idle.pop()) {
      if (now - conn.idleSince < conn.idleMs) return w.ready(conn)
      conn.destroy()
    }
    if (this.#open < this.#limit) return w.ready(this.#connect())
    if (this.#waiters.length >= this.#maxWaiters) return w.failed(new UpstreamError('POOL_FULL', `${this.#maxWaiters} requests wait for this instance already`))
    this.#waiters.push(w)
  }

  /** `w` no longer waits (its client left, or it gave up). */
  cancel(w: Waiter): void {
    const i = this.#waiters.indexOf(w)
    if (i >= 0) this.#waiters.splice(i, 1)
  }

  /** A connection outside the pool's bound, for one exchange, closed after it (a streamed body). */
  own(): Conn {
    return new Conn(this.#target, null, this.#connectTimeoutMs, this.#maxHeaderBytes)
  }

  /** Closes the idle sockets and refuses new requests; busy ones close when their exchange ends. */
  close(): void {
    this.#closed = true
    if (this.#sweeper) clearInterval(this.#sweeper)
    for (const conn of this.#idle.splice(0)) conn.destroy()
    for (const w of this.#waiters.splice(0)) w.failed(new UpstreamError('POOL_CLOSED', 'the upstream left'))
  }

  /** From Conn.release: a socket free for the next exchange. */
  reuse(conn: Conn): void {
    if (this.#closed) return conn.destroy()
    conn.resumeReading()
    const next = this.#waiters.shift()
    if (next) return next.ready(conn)
    conn.toIdle()
    conn.idleSince = Date.now()
    this.#idle.push(conn)
    if (!this.#sweeper) {
      this.#sweeper = setInterval(() => this.#sweep(), 1000)
      this.#sweeper.unref()
    }
  }

  /** From Conn.destroy: a socket of this pool closed (it was `was`). */
  closed(conn: Conn, was: ConnState): void {
    this.#open--
    if (was === 'idle') {
      const i = this.#idle.indexOf(conn)
      if (i >= 0) this.#idle.splice(i, 1)
    }
    // Its place may serve a waiting request.
    if (!this.#closed && this.#waiters.length > 0 && this.#open < this.#limit) this.#waiters.shift()!.ready(this.#connect())
  }

  #connect(): Conn {
    this.#open++
    return new Conn(this.#target, this, this.#connectTimeoutMs, this.#maxHeaderBytes)
  }

  /** Closes the sockets idle past their time (the oldest are first). */
  #sweep(): void {
    const now = Date.now()
    while (this.#idle.length > 0 && now - this.#idle[0]!.idleSince >= this.#idle[0]!.idleMs) this.#idle[0]!.destroy()
    if (this.#idle.length === 0 && this.#sweeper) {
      clearInterval(this.#sweeper)
      this.#sweeper = null
    }
  }
}
