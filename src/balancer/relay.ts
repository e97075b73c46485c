/**
 * One request relayed to one upstream over a socket of its pool (upstream-pool.ts): the head,
 * serialized once by the proxy core, is written with a buffered body in one go (a larger body
 * streams after it, on a connection of its own, closed after); the answer is streamed to the client
 * as it is parsed. Every wait is bounded: for a socket and the answer's head (`upstreamTimeoutMs`),
 * each pause in the answer's body (`upstreamBodyTimeoutMs`), a client that does not read
 * (`sendTimeoutMs`, then its connection is cut). A client that leaves aborts the exchange and its
 * socket is destroyed, never pooled again.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { signAffinity } from './affinity.js'
import { ClientAnswer } from './answer.js'
import type { ResolvedBalancerOptions } from './options.js'
import type { BalancerStats } from './proxy.js'
import { type AnswerSink, type Conn, UpstreamError } from './upstream-conn.js'
import type { Waiter } from './upstream-pool.js'
import type { Upstream } from './upstreams.js'

/** Headers of one hop only: never relayed either way. */
export const HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'expect',
  'http2-settings',
])

/** The client closed its connection before the answer was complete. */
export class ClientGoneError extends Error {
  constructor() {
    super('the client closed the connection')
  }
}

export interface RelayRequest {
  readonly up: Upstream
  readonly req: IncomingMessage
  readonly res: ServerResponse
  /** The whole request head, request line to the empty line. */
  readonly head: string
  /** Sent after the head: whole, or streamed (already framed by the head: its length, or chunked). */
  readonly body: Buffer | AsyncIterable<Buffer> | null
  readonly chunked: boolean
  /** A HEAD request: its answer has no body. */
  readonly headOnly: boolean
  /** Pin the client to this upstream with the sticky cookie. */
  readonly pin: boolean
}

/** Resolves once `socket` may be written again (or is closed). */
function drained(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      socket.off('drain', done).off('close', done)
      resolve()
    }
    socket.on('drain', done).on('close', done)
  })
}

/**
 * One attempt at relaying a request: `run()` resolves once the answer is relayed whole, and rejects
 * with UpstreamError (the upstream failed; `started` tells whether the client got the answer's
 * head), ClientGoneError, or the body's own error (a client that stalled).
 */
export class Exchange implements AnswerSink, Waiter {
  readonly #opts: ResolvedBalancerOptions
  readonly #stats: BalancerStats
  readonly #r: RelayRequest
  #resolve: (() => void) | null = null
  #reject: ((err: Error) => void) | null = null
  #conn: Conn | null = null
  #settled = false
  /** The request is written whole: the socket may be pooled after the answer. */
  #written = false
  #timer: NodeJS.Timeout | null = null
  #phase: 'head' | 'body' = 'head'
  #sendTimer: NodeJS.Timeout | null = null
  #paused = false
  readonly #pending: Buffer[] = []
  readonly #answer: ClientAnswer
  /** The answer's head went to the client: the request cannot be retried. */
  started = false

  constructor(opts: ResolvedBalancerOptions, stats: BalancerStats, r: RelayRequest) {
    this.#opts = opts
    this.#stats = stats
    this.#r = r
    this.#answer = new ClientAnswer(r.req, r.res, opts.keepAliveTimeoutMs)
  }

  run(): Promise<void> {
    // A plain promise: this is the hot path, one per request.
    const done = new Promise<void>((resolve, reject) => {
      this.#resolve = resolve
      this.#reject = reject
    })
    this.#r.res.once('close', this.#onClientGone)
    if (this.#r.body !== null && !Buffer.isBuffer(this.#r.body)) {
      this.ready(this.#r.up.pool.own())
    } else {
      this.#timer = setTimeout(this.#onTimeout, this.#opts.upstreamTimeoutMs)
      this.#r.up.pool.acquire(this)
    }
    return done
  }

  ready(conn: Conn): void {
    this.#conn = conn
    conn.assign(this, this.#r.headOnly)
    const { head, body } = this.#r
    const socket = conn.socket
    if (body === null) {
      socket.write(head, 'latin1')
      this.#written = true
    } else if (Buffer.isBuffer(body)) {
      socket.cork()
      socket.write(head, 'latin1')
      socket.write(body)
      socket.uncork()
      this.#written = true
    } else {
      socket.write(head, 'latin1')
      void this.#pump(conn, body)
    }
  }

  failed(err: UpstreamError): void {
    this.#conn = null
    this.#settle(err)
  }

  head(status: number, raw: string[]): void {
    const { req, up } = this.#r
    this.started = true
    const headers: string[] = []
    let hasLength = false
    let hasDate = false
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!.toLowerCase()
      if (!HOP.has(name)) {
        headers.push(raw[i]!, raw[i + 1]!)
        if (name === 'content-length') hasLength = true
        else if (name === 'date') hasDate = true
      } else if (name === 'keep-alive') {
        this.#conn?.keepAliveHint(raw[i + 1]!)
      }
    }
    if (this.#r.pin) headers.push('set-cookie', `${this.#opts.stickyCookie}=${signAffinity(this.#opts.secret, up.member.id)}; Path=/; HttpOnly; SameSite=Lax`)
    try {
      // An answer before the whole body arrived (an early 413): the rest of the body is not read,
      // so the client's connection cannot carry another request.
      this.#answer.head({ status, headers, hasLength, hasDate, close: !req.complete }, this.#r.headOnly)
    } catch (err) {
      this.#abort(new UpstreamError('HPE_INVALID_HEADER', `the instance's answer cannot be relayed: ${(err as Error).message}`))
      return
    }
    this.#stats.perUpstream[up.member.id] = (this.#stats.perUpstream[up.member.id] ?? 0) + 1
  }

  body(chunk: Buffer): void {
    this.#pending.push(chunk)
  }

  parsed(ended: boolean): void {
    if (this.#settled) return
    if (ended) {
      const conn = this.#conn!
      this.#conn = null
      this.#settle()
      conn.release(this.#written)
      this.#answer.end(this.#pending)
      return
    }
    if (!this.started) return // only informational answers so far
    if (this.#phase === 'head') {
      this.#phase = 'body'
      if (this.#timer) clearTimeout(this.#timer)
      this.#timer = setTimeout(this.#onTimeout, this.#opts.upstreamBodyTimeoutMs)
    } else if (!this.#paused) {
      this.#timer?.refresh()
    }
    if (!this.#answer.write(this.#pending) && !this.#paused) this.#pause()
  }

  /** The client does not read fast enough: the upstream waits (its body timeout stopped), for at most the send timeout. */
  #pause(): void {
    this.#paused = true
    this.#conn?.pauseReading()
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = null
    // A client that does not read its answer holds the upstream connection: bounded.
    this.#sendTimer = setTimeout(() => this.#r.res.destroy(), this.#opts.sendTimeoutMs)
    this.#answer.drainSource.once('drain', this.#onDrain)
  }

  readonly #onDrain = (): void => {
    if (this.#sendTimer) clearTimeout(this.#sendTimer)
    this.#sendTimer = null
    this.#paused = false
    if (this.#settled) return
    this.#timer = setTimeout(this.#onTimeout, this.#opts.upstreamBodyTimeoutMs)
    this.#conn?.resumeReading()
  }

  readonly #onClientGone = (): void => {
    this.#abort(new ClientGoneError())
  }

  readonly #onTimeout = (): void => {
    this.#timer = null
    if (this.#phase === 'body') this.#abort(new UpstreamError('BODY_TIMEOUT', `the instance's answer paused for over ${this.#opts.upstreamBodyTimeoutMs} ms`))
    else if (this.#conn) this.#abort(new UpstreamError('HEAD_TIMEOUT', `the instance did not answer within ${this.#opts.upstreamTimeoutMs} ms`))
    else this.#abort(new UpstreamError('QUEUE_TIMEOUT', `no connection to the instance was free within ${this.#opts.upstreamTimeoutMs} ms`))
  }

  /** Ends the exchange early: its socket is destroyed (or it stops waiting for one). */
  #abort(err: Error): void {
    if (this.#settled) return
    if (this.#conn) this.#conn.destroy()
    else this.#r.up.pool.cancel(this)
    this.#conn = null
    this.#settle(err)
  }

  #settle(err?: Error): void {
    if (this.#settled) return
    this.#settled = true
    if (this.#timer) clearTimeout(this.#timer)
    if (this.#sendTimer) clearTimeout(this.#sendTimer)
    this.#r.res.off('close', this.#onClientGone)
    if (this.#paused) this.#answer.drainSource.off('drain', this.#onDrain)
    if (err) this.#reject!(err)
    else this.#resolve!()
  }

  /** Streams a large body on its own connection (which waits for the instance to read). */
  async #pump(conn: Conn, body: AsyncIterable<Buffer>): Promise<void> {
    const socket = conn.socket
    const chunked = this.#r.chunked
    try {
      for await (const chunk of body) {
        if (this.#conn !== conn) return // the answer ended, or the exchange failed
        if (chunk.length === 0) continue
        if (chunked) {
          socket.cork()
          socket.write(`${chunk.length.toString(16)}\r\n`, 'latin1')
          socket.write(chunk)
          socket.write('\r\n', 'latin1')
          socket.uncork()
        } else {
          socket.write(chunk)
        }
        if (socket.writableNeedDrain) await drained(socket)
      }
      if (this.#conn !== conn) return
      if (chunked) socket.write('0\r\n\r\n', 'latin1')
      this.#written = true
      // The answer's head is due from now on (an early answer may have come already).
      if (!this.started && !this.#settled) this.#timer = setTimeout(this.#onTimeout, this.#opts.upstreamTimeoutMs)
    } catch (err) {
      this.#abort(err as Error)
    }
  }
}
