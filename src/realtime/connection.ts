/**
 * One STOMP session over one WebSocket: its state, and its frames. Frames are handled one at a time,
 * in arrival order, by methods named after the STOMP command; a receipt is sent only once its frame's
 * work is done. Any protocol violation, refused authorization or breached limit is answered with an
 * ERROR frame (carrying `receipt-id` when the frame asked for a receipt) and the connection is
 * closed; nothing of the offending frame takes effect. The socket side (corking, slow consumers,
 * heart-beats) is wire.ts; subscriptions and their MESSAGE frames are subscription.ts.
 */
import { randomBytes } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import type { WebSocket } from 'ws'
import { type ErrorCode, isChorusError, toError } from '../errors.js'
import { Machine } from '../util/machine.js'
import { kindOf } from './destinations.js'
import { serialize, type Frame } from './frame.js'
import type { RealtimeLimits } from './options.js'
import { StompParseError, StompParser } from './parser.js'
import { Subscription } from './subscription.js'
import { Wire, type WsFrame } from './wire.js'

export type { RealtimeLimits } from './options.js'

/**
 * The states of a connection and where each may be entered from:
 * - `awaiting-connect`: upgraded; only CONNECT (or STOMP) is accepted, within `connectTimeoutMs`.
 * - `connected`: CONNECTED was sent; subscriptions, sends and heart-beats run.
 * - `closed`: the socket is closing or gone and everything the session held is released. Final.
 */
const enteredFrom = {
  'awaiting-connect': [],
  connected: ['awaiting-connect'],
  closed: ['awaiting-connect', 'connected'],
} as const
export type ConnectionState = keyof typeof enteredFrom

/** A connection's state machine, starting at `awaiting-connect` (exported so its edges can be tested alone). */
export function connectionMachine(): Machine<ConnectionState> {
  return new Machine<ConnectionState>('realtime connection', enteredFrom, 'awaiting-connect')
}

export interface Principal {
  /** The user name: `/user/queue/…` messages for this name reach this session. */
  readonly name: string
  readonly [key: string]: unknown
}

/** What a connection needs from the gateway. */
export interface ConnectionHost {
  readonly limits: RealtimeLimits
  readonly heartbeat: { readonly send: number; readonly receive: number }
  readonly serverName: string
  /** The last message id this instance delivered: a client's resume point if it has seen nothing yet. */
  head(): number
  /** This instance's id, sent in CONNECTED (`chorus-instance`) so clients can show where they are. */
  readonly instanceId: string
  authenticateConnect(request: IncomingMessage, headers: Readonly<Record<string, string>>, atUpgrade: Principal | null): Promise<Principal | null>
  authorize(principal: Principal | null, action: 'subscribe' | 'send', destination: string): Promise<boolean>
  subscribe(sub: Subscription, lastId: string | undefined): Promise<void>
  unsubscribe(sub: Subscription): void
  sendFromClient(conn: Connection, destination: string, headers: Readonly<Record<string, string>>, body: string): Promise<void>
  /** Why `principal` may not open one more session here, or null when it may. Checked on CONNECT, right before `opened`. */
  admit(principal: Principal | null): string | null
  opened(conn: Connection): void
  closed(conn: Connection): void
}

/** Raised inside frame handlers; becomes an ERROR frame. */
class FrameError extends Error {
  readonly code: ErrorCode
  readonly closeCode: number
  constructor(code: ErrorCode, message: string, closeCode = 1002) {
    super(message)
    this.code = code
    this.closeCode = closeCode
  }
}

export class Connection {
  readonly sessionId = randomBytes(9).toString('base64url')
  readonly request: IncomingMessage
  readonly subscriptions = new Map<string, Subscription>()
  readonly connectedAt = Date.now()
  principal: Principal | null
  version = '1.2'
  readonly #host: ConnectionHost
  readonly #wire: Wire
  readonly #parser: StompParser
  readonly #machine = connectionMachine()
  #chain: Promise<void> = Promise.resolve()
  #pendingFrames = 0
  /** Whether what the session held was released (once, by whichever way it ended first). */
  #released = false

  constructor(ws: WebSocket, request: IncomingMessage, principal: Principal | null, host: ConnectionHost, socket?: Duplex) {
    this.request = request
    this.principal = principal
    this.#host = host
    this.#parser = new StompParser((frame) => this.#onFrame(frame), { limits: host.limits, onHeartbeat: () => undefined })
    this.#wire = new Wire(ws, socket, host.limits.maxPendingBytes, { data: (chunk) => this.#onData(chunk), closed: () => this.#release() })
    this.#wire.after(host.limits.connectTimeoutMs, () => {
      if (this.#machine.is('awaiting-connect')) this.#fail(new FrameError('CHORUS_ERR_REALTIME_PROTOCOL', `no CONNECT within ${host.limits.connectTimeoutMs} ms`), undefined)
    })
  }

  get limits(): RealtimeLimits {
    return this.#host.limits
  }

  get state(): ConnectionState {
    return this.#machine.state
  }

  /** Queues a frame for the client; a client that lets more than `maxPendingBytes` queue up is dropped as a slow consumer. */
  write(frame: string | Buffer): void {
    if (this.#machine.is('closed')) return
    this.#bound(this.#wire.write(frame))
  }

  /** `write` for a frame already framed for WebSocket (a MESSAGE shared by many subscribers). */
  writeFrame(frame: WsFrame): void {
    if (this.#machine.is('closed')) return
    this.#bound(this.#wire.writeFrame(frame))
  }

  #bound(waiting: number): void {
    if (waiting > this.#host.limits.maxPendingBytes) {
      this.#fail(new FrameError('CHORUS_ERR_REALTIME_SLOW_CONSUMER', `more than ${this.#host.limits.maxPendingBytes} bytes waiting for this client`, 1008), undefined)
    }
  }

  /** Ends the session with an ERROR frame carrying `code` (the app signed the user out, say), then close `closeCode`. */
  refuse(code: ErrorCode, message: string, closeCode = 1008): void {
    this.#fail(new FrameError(code, message, closeCode), undefined)
  }

  /** Closes with a WebSocket close code (e.g. 1012 when the instance shuts down: reconnect elsewhere). */
  close(code = 1000, reason = ''): void {
    if (this.#machine.is('closed')) return
    this.#machine.to('closed')
    this.#wire.close(code, reason)
    this.#release()
  }

  #onData(chunk: Buffer): void {
    if (this.#machine.is('closed')) return
    try {
      this.#parser.push(chunk)
    } catch (err) {
      const e = err instanceof StompParseError ? err : toError(err)
      const code: ErrorCode = e instanceof StompParseError && /too-large|too-many|too-long/.test(e.kind) ? 'CHORUS_ERR_REALTIME_LIMIT' : 'CHORUS_ERR_REALTIME_PROTOCOL'
      this.#fail(new FrameError(code, e.message, code === 'CHORUS_ERR_REALTIME_LIMIT' ? 1009 : 1002), undefined)
    }
  }

  #onFrame(frame: Frame): void {
    if (++this.#pendingFrames > this.#host.limits.maxPendingFrames) {
      throw new StompParseError('too-many-headers', `more than ${this.#host.limits.maxPendingFrames} frames waiting to be handled`)
    }
    this.#chain = this.#chain.then(async () => {
      try {
        if (!this.#machine.is('closed')) await this.#handle(frame)
      } catch (err) {
        this.#fail(err, frame.headers.receipt)
      } finally {
        this.#pendingFrames--
      }
    })
  }

  async #handle(frame: Frame): Promise<void> {
    if (this.#machine.is('awaiting-connect') && frame.command !== 'CONNECT' && frame.command !== 'STOMP') {
      throw new FrameError('CHORUS_ERR_REALTIME_PROTOCOL', `${frame.command} before CONNECT`)
    }
    switch (frame.command) {
      case 'CONNECT':
      case 'STOMP':
        return this.CONNECT(frame)
      case 'SEND':
        return this.SEND(frame)
      case 'SUBSCRIBE':
        return this.SUBSCRIBE(frame)
      case 'UNSUBSCRIBE':
        return this.UNSUBSCRIBE(frame)
      case 'ACK':
      case 'NACK':
        return this.ACK(frame)
      case 'BEGIN':
      case 'COMMIT':
      case 'ABORT':
        throw new FrameError('CHORUS_ERR_REALTIME_PROTOCOL', `${frame.command}: transactions are not supported`)
      case 'DISCONNECT':
        return this.DISCONNECT(frame)
      default: {
        const never: never = frame.command
        throw new FrameError('CHORUS_ERR_REALTIME_PROTOCOL', `unknown command ${String(never)}`)
      }
    }
  }

  #receipt(frame: Frame): void {
    const receipt = frame.headers.receipt
    if (receipt !== undefined) this.write(serialize('RECEIPT', { 'receipt-id': receipt }))
  }

  async CONNECT(frame: Frame): Promise<void> {
    if (!this.#machine.is('awaiting-connect')) throw new FrameError('CHORUS_ERR_REALTIME_PROTOCOL', 'already connected')
    const accepted = (frame.headers['accept-version'] ?? '1.0').split(',').map((v) => v.trim())
    const version = ['1.2', '1.1', '1.0'].find((v) => accepted.includes(v))
    if (!version) {
      this.write(serialize('ERROR', { version: '1.2,1.1,1.0', 'content-type': 'text/plain', message: 'supported protocol versions are 1.2, 1.1 and 1.0' }, ''))
      this.close(1002, 'unsupported version')
      return
    }
    this.version = version
    let principal: Principal | null
    try {
      principal = await this.#host.authenticateConnect(this.request, frame.headers, this.principal)
    } catch (err) {
      throw new FrameError('CHORUS_ERR_REALTIME_UNAUTHENTICATED', toError(err).message || 'authentication failed', 1008)
    }
    // The client may have gone (or the session timed out) while `authenticate` ran: nothing to open.
    if (this.#machine.is('closed')) return
    const over = this.#host.admit(principal)
    if (over !== null) throw new FrameError('CHORUS_ERR_REALTIME_TOO_MANY_CONNECTIONS', `too many connections: ${over}`, 1008)
    this.principal = principal
    const [cx, cy] = parseHeartbeat(frame.headers['heart-beat'])
    const { send: sx, receive: sy } = this.#host.heartbeat
    const outgoing = sx === 0 || cy === 0 ? 0 : Math.max(sx, cy)
    const incoming = cx === 0 || sy === 0 ? 0 : Math.max(cx, sy)
    this.#machine.to('connected')
    this.write(
      serialize('CONNECTED', {
        version,
        'heart-beat': `${sx},${sy}`,
        session: this.sessionId,
        server: this.#host.serverName,
        ...(principal ? { 'user-name': principal.name } : {}),
        'chorus-head': this.#host.head(),
        'chorus-instance': this.#host.instanceId,
      }),
    )
    this.#wire.heartbeats(outgoing, incoming, () => {
      // Silent past its allowance: cut without a close handshake (the peer is likely gone).
      this.#machine.to('closed')
      this.#wire.terminate()
      this.#release()
    })
    this.#host.opened(this)
  }

  async SUBSCRIBE(frame: Frame): Promise<void> {
    const { id, destination } = frame.headers
    if (!id) throw new FrameError('CHORUS_ERR_REALTIME_PROTOCOL', 'SUBSCRIBE without an id header')
    if (!destination) throw new FrameError('CHORUS_ERR_REALTIME_PROTOCOL', 'SUBSCRIBE without a destination header')
    if (this.subscriptions.has(id)) throw new FrameError('CHORUS_ERR_REALTIME_PROTOCOL', `subscription id ${id} is already in use`)
    if (this.subscriptions.size >= this.#host.limits.maxSubscriptions) {
      throw new FrameError('CHORUS_ERR_REALTIME_LIMIT', `more than ${this.#host.limits.maxSubscriptions} subscriptions`, 1008)
    }
    const kind = kindOf(destination)
    if (kind !== 'topic' && kind !== 'user') throw new FrameError('CHORUS_ERR_REALTIME_DESTINATION_INVALID', `cannot subscribe to ${destination}`, 1008)
    if (kind === 'user' && !this.principal) throw new FrameError('CHORUS_ERR_REALTIME_FORBIDDEN', `${destination} needs an authenticated user`, 1008)
    if (!(await this.#allowed('subscribe', destination))) throw new FrameError('CHORUS_ERR_REALTIME_FORBIDDEN', `not allowed to subscribe to ${destination}`, 1008)
    const ack = frame.headers.ack ?? 'auto'
    if (ack !== 'auto' && ack !== 'client' && ack !== 'client-individual') throw new FrameError('CHORUS_ERR_REALTIME_PROTOCOL', `unknown ack mode ${ack}`)
    // Gone while `authorize` ran: a route added now would never be removed.
    if (this.#machine.is('closed')) return
    const sub = new Subscription(this, id, destination, kind === 'user' ? this.principal!.name : '', ack)
    this.subscriptions.set(id, sub)
    await this.#host.subscribe(sub, frame.headers['chorus-last-id'])
    this.#receipt(frame)
  }

  async UNSUBSCRIBE(frame: Frame): Promise<void> {
    const sub = frame.headers.id ? this.subscriptions.get(frame.headers.id) : undefined
    if (!sub) throw new FrameError('CHORUS_ERR_REALTIME_PROTOCOL', `no subscription ${JSON.stringify(frame.headers.id ?? null)}`)
    this.subscriptions.delete(sub.id)
    this.#host.unsubscribe(sub)
    this.#receipt(frame)
  }

  async SEND(frame: Frame): Promise<void> {
    const { destination } = frame.headers
    if (!destination) throw new FrameError('CHORUS_ERR_REALTIME_PROTOCOL', 'SEND without a destination header')
    if (frame.headers.transaction !== undefined) throw new FrameError('CHORUS_ERR_REALTIME_PROTOCOL', 'transactions are not supported')
    const kind = kindOf(destination)
    if (kind !== 'topic' && kind !== 'app') throw new FrameError('CHORUS_ERR_REALTIME_DESTINATION_INVALID', `cannot send to ${destination}`, 1008)
    if (!(await this.#allowed('send', destination))) throw new FrameError('CHORUS_ERR_REALTIME_FORBIDDEN', `not allowed to send to ${destination}`, 1008)
    const body = frame.body.toString('utf8')
    try {
      await this.#host.sendFromClient(this, destination, frame.headers, body)
    } catch (err) {
      if (err instanceof FrameError) throw err
      const e = toError(err)
      const code: ErrorCode = isChorusError(e) ? e.code : 'CHORUS_ERR_REALTIME_HANDLER_FAILED'
      throw new FrameError(code, e.message, 1011)
    }
    this.#receipt(frame)
  }

  async ACK(frame: Frame): Promise<void> {
    if (this.version === '1.2' && !frame.headers.id) throw new FrameError('CHORUS_ERR_REALTIME_PROTOCOL', `${frame.command} without an id header`)
    this.#receipt(frame)
  }

  async DISCONNECT(frame: Frame): Promise<void> {
    this.#receipt(frame)
    this.close(1000, 'disconnect')
  }

  async #allowed(action: 'subscribe' | 'send', destination: string): Promise<boolean> {
    try {
      return (await this.#host.authorize(this.principal, action, destination)) === true
    } catch {
      return false
    }
  }

  #fail(err: unknown, receipt: string | undefined): void {
    if (this.#machine.is('closed')) return
    const fe = err instanceof FrameError ? err : new FrameError('CHORUS_ERR_REALTIME_PROTOCOL', toError(err).message)
    const headers: Record<string, string> = { message: `${fe.code}: ${fe.message}`.slice(0, 500), 'content-type': 'text/plain' }
    if (receipt !== undefined) headers['receipt-id'] = receipt
    this.#wire.sendLast(serialize('ERROR', headers, fe.message))
    this.close(fe.closeCode, fe.code)
  }

  /** Releases what the session held (timers, subscriptions, its place in the gateway's counts), once. */
  #release(): void {
    if (this.#released) return
    this.#released = true
    this.#machine.to('closed')
    this.#wire.stop()
    for (const sub of this.subscriptions.values()) this.#host.unsubscribe(sub)
    this.subscriptions.clear()
    this.#host.closed(this)
  }
}

function parseHeartbeat(value: string | undefined): [number, number] {
  const m = /^(\d{1,9}),(\d{1,9})$/.exec(value ?? '')
  return m ? [Number(m[1]), Number(m[2])] : [0, 0]
}
