/**
 * One STOMP session over one WebSocket. Frames are handled one at a time, in arrival order, by
 * methods named after the STOMP command; a receipt is sent only once its frame's work is done. Any
 * protocol violation, refused authorization or breached limit is answered with an ERROR frame
 * (carrying `receipt-id` when the frame asked for a receipt) and the connection is closed; nothing
 * of the offending frame takes effect.
 */
import { randomBytes } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import { WebSocket } from 'ws'
import { type ErrorCode, isChorusError, toError } from '../errors.js'
import { kindOf } from './destinations.js'
import { escapeHeader, serialize, type Frame } from './frame.js'
import type { LogMessage } from './log.js'
import { StompParseError, StompParser, type ParserLimits } from './parser.js'

export interface Principal {
  /** The user name: `/user/queue/…` messages for this name reach this session. */
  readonly name: string
  readonly [key: string]: unknown
}

export interface RealtimeLimits extends ParserLimits {
  /** Subscriptions one connection may hold. Default 100. */
  maxSubscriptions: number
  /** Bytes queued for a client before it is disconnected as a slow consumer. Default 1 MiB. */
  maxPendingBytes: number
  /** Frames received but not yet handled, per connection. Default 64. */
  maxPendingFrames: number
  /** Messages replayed on resume before a gap notice is sent instead. Default 1,000. */
  maxReplay: number
  /** Time allowed between the upgrade and CONNECT. Default 10 s. */
  connectTimeoutMs: number
  /** Connections one principal (by name) may hold on this endpoint of this instance; more are refused at the upgrade (429) or on CONNECT (ERROR). Default 20. */
  maxConnectionsPerPrincipal: number
  /** Connections one client address may hold on this endpoint of this instance, counted from the upgrade; more are refused with 429. Default 1,000. */
  maxConnectionsPerAddress: number
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

const TEXT = { binary: false } as const
/** Most bytes held back while corked; beyond, they go to the socket at once. */
const CORK_BYTES = 64 * 1024

const reservedHeaders = new Set(['subscription', 'message-id', 'destination', 'content-length', 'ack', 'chorus-gap'])

export class Subscription {
  readonly id: string
  readonly destination: string
  /** For `/user/queue/…`: the principal's name; '' for topics. */
  readonly user: string
  readonly ack: string
  readonly connection: Connection
  /** Highest message id sent to this subscription. */
  lastSent = 0
  #replaying = false
  #pending: LogMessage[] = []
  #overflowed = false

  constructor(connection: Connection, id: string, destination: string, user: string, ack: string) {
    this.connection = connection
    this.id = id
    this.destination = destination
    this.user = user
    this.ack = ack
  }

  get key(): string {
    return routeKey(this.destination, this.user)
  }

  /** Live delivery: held back while a replay runs, then sent in order without duplicates. */
  deliver(m: LogMessage, frames?: MessageFrames): void {
    if (this.#replaying) {
      if (this.#pending.length < this.connection.limits.maxReplay) this.#pending.push(m)
      else this.#overflowed = true
      return
    }
    this.send(m, frames)
  }

  /** Sends one message unless it was already sent; `frames` shares its serialization with the message's other subscriptions. */
  send(m: LogMessage, frames: MessageFrames = new MessageFrames(m)): void {
    if (m.id <= this.lastSent) return
    this.lastSent = m.id
    this.connection.write(frames.for(this.id, this.ack !== 'auto'))
  }

  /** An explicit notice that messages may be missing: the client should refetch its state. */
  gap(reason: string): void {
    this.connection.write(
      serialize('MESSAGE', { subscription: this.id, 'message-id': `gap-${this.lastSent}-${Date.now()}`, destination: this.destination, 'chorus-gap': reason }, ''),
    )
  }

  beginReplay(): void {
    this.#replaying = true
  }

  endReplay(): void {
    this.#replaying = false
    const pending = this.#pending
    this.#pending = []
    if (this.#overflowed) {
      this.#overflowed = false
      this.gap('overflow')
    }
    for (const m of pending) this.send(m)
  }
}

/**
 * The MESSAGE frames of one message, for every subscription it goes to. The frame is the one
 * `serialize('MESSAGE', …)` gives for headers subscription, message-id, destination, ack (unless
 * the ack mode is auto), then the message's own headers; what all subscriptions share is built once,
 * and the whole frame once per distinct subscription id and ack mode (clients mostly number their
 * subscriptions alike, e.g. `sub-0`), so a fan-out to many subscribers encodes it once, not once each.
 */
export class MessageFrames {
  readonly #m: LogMessage
  #head: string | undefined
  #tail: string | undefined
  readonly #built = new Map<string, Buffer>()

  constructor(m: LogMessage) {
    this.#m = m
  }

  /** The frame for subscription `id`, with an `ack` header when the subscription acknowledges. */
  for(id: string, ack: boolean): Buffer {
    const key = (ack ? 'c' : 'a') + id
    let frame = this.#built.get(key)
    if (frame === undefined) {
      const m = this.#m
      this.#head ??= 'message-id:' + m.id + '\ndestination:' + escapeHeader(m.destination) + '\n'
      if (this.#tail === undefined) {
        let tail = ''
        for (const [k, v] of Object.entries(m.headers)) if (!reservedHeaders.has(k)) tail += escapeHeader(k) + ':' + escapeHeader(String(v)) + '\n'
        this.#tail = tail + 'content-length:' + Buffer.byteLength(m.body) + '\n\n' + m.body + '\u0000'
      }
      frame = Buffer.from('MESSAGE\nsubscription:' + escapeHeader(id) + '\n' + this.#head + (ack ? 'ack:' + m.id + '\n' : '') + this.#tail)
      this.#built.set(key, frame)
    }
    return frame
  }
}

export function routeKey(destination: string, user: string): string {
  return user ? `u:${user}:${destination}` : `t:${destination}`
}

type ConnState = 'awaiting-connect' | 'connected' | 'closed'

export class Connection {
  readonly sessionId = randomBytes(9).toString('base64url')
  readonly request: IncomingMessage
  readonly subscriptions = new Map<string, Subscription>()
  readonly connectedAt = Date.now()
  principal: Principal | null
  version = '1.2'
  readonly #ws: WebSocket
  readonly #host: ConnectionHost
  readonly #parser: StompParser
  #state: ConnState = 'awaiting-connect'
  #chain: Promise<void> = Promise.resolve()
  #pendingFrames = 0
  #lastReceived = Date.now()
  #lastSent = Date.now()
  #timers: NodeJS.Timeout[] = []
  #cleaned = false
  /** The upgraded socket under `ws` (corked while a tick's frames are written), if it can cork. */
  readonly #socket: Duplex | null
  #corked = false
  /** Bytes waiting while corked before they are handed on at once. */
  readonly #flushAt: number

  constructor(ws: WebSocket, request: IncomingMessage, principal: Principal | null, host: ConnectionHost, socket?: Duplex) {
    this.#ws = ws
    this.request = request
    this.principal = principal
    this.#host = host
    this.#socket = socket && typeof socket.cork === 'function' ? socket : null
    this.#flushAt = Math.min(CORK_BYTES, host.limits.maxPendingBytes)
    this.#parser = new StompParser((frame) => this.#onFrame(frame), { limits: host.limits, onHeartbeat: () => undefined })
    ws.on('message', (data: Buffer | ArrayBuffer | Buffer[]) => this.#onData(data))
    ws.on('close', () => this.#closed())
    ws.on('error', () => this.#closed())
    const t = setTimeout(() => {
      if (this.#state === 'awaiting-connect') this.#fail(new FrameError('CHORUS_ERR_REALTIME_PROTOCOL', `no CONNECT within ${host.limits.connectTimeoutMs} ms`), undefined)
    }, host.limits.connectTimeoutMs)
    t.unref()
    this.#timers.push(t)
  }

  get limits(): RealtimeLimits {
    return this.#host.limits
  }

  get state(): ConnState {
    return this.#state
  }

  #setState(next: ConnState): void {
    switch (next) {
      case 'awaiting-connect':
      case 'connected':
      case 'closed':
        this.#state = next
        return
      default: {
        const never: never = next
        throw new Error(`unknown state ${String(never)}`)
      }
    }
  }

  /**
   * Queues a frame for the client (as a WebSocket text message); a client that lets too much queue
   * up is dropped as a slow consumer. Frames written in one tick leave together: the socket is
   * corked at the first and uncorked on the next tick (or as soon as a batch's worth is waiting),
   * so a burst of messages costs one system call per connection rather than one per message.
   */
  write(frame: string | Buffer): void {
    if (this.#state === 'closed' || this.#ws.readyState !== WebSocket.OPEN) return
    this.#cork()
    this.#ws.send(frame, TEXT)
    this.#lastSent = Date.now()
    let pending = this.#ws.bufferedAmount
    if (this.#corked && pending >= this.#flushAt) {
      this.#uncork()
      pending = this.#ws.bufferedAmount
    }
    if (pending > this.#host.limits.maxPendingBytes) {
      this.#fail(new FrameError('CHORUS_ERR_REALTIME_SLOW_CONSUMER', `more than ${this.#host.limits.maxPendingBytes} bytes waiting for this client`, 1008), undefined)
    }
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

  /** Ends the session with an ERROR frame carrying `code` (the app signed the user out, say), then close `closeCode`. */
  refuse(code: ErrorCode, message: string, closeCode = 1008): void {
    this.#fail(new FrameError(code, message, closeCode), undefined)
  }

  /** Closes with a WebSocket close code (e.g. 1012 when the instance shuts down: reconnect elsewhere). */
  close(code = 1000, reason = ''): void {
    if (this.#state === 'closed') return
    this.#setState('closed')
    this.#uncork()
    try {
      this.#ws.close(code, reason)
    } catch {
      this.#ws.terminate()
    }
    const t = setTimeout(() => this.#ws.terminate(), 1000)
    t.unref()
    this.#closed()
  }

  #onData(data: Buffer | ArrayBuffer | Buffer[]): void {
    this.#lastReceived = Date.now()
    if (this.#state === 'closed') return
    const chunk = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)
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
        if (this.#state !== 'closed') await this.#handle(frame)
      } catch (err) {
        this.#fail(err, frame.headers.receipt)
      } finally {
        this.#pendingFrames--
      }
    })
  }

  async #handle(frame: Frame): Promise<void> {
    if (this.#state === 'awaiting-connect' && frame.command !== 'CONNECT' && frame.command !== 'STOMP') {
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
    if (this.#state !== 'awaiting-connect') throw new FrameError('CHORUS_ERR_REALTIME_PROTOCOL', 'already connected')
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
    const over = this.#host.admit(principal)
    if (over !== null) throw new FrameError('CHORUS_ERR_REALTIME_TOO_MANY_CONNECTIONS', `too many connections: ${over}`, 1008)
    this.principal = principal
    const [cx, cy] = parseHeartbeat(frame.headers['heart-beat'])
    const { send: sx, receive: sy } = this.#host.heartbeat
    const outgoing = sx === 0 || cy === 0 ? 0 : Math.max(sx, cy)
    const incoming = cx === 0 || sy === 0 ? 0 : Math.max(cx, sy)
    this.#setState('connected')
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
    this.#startHeartbeats(outgoing, incoming)
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
    if (this.#state === 'closed') return
    const fe = err instanceof FrameError ? err : new FrameError('CHORUS_ERR_REALTIME_PROTOCOL', toError(err).message)
    const headers: Record<string, string> = { message: `${fe.code}: ${fe.message}`.slice(0, 500), 'content-type': 'text/plain' }
    if (receipt !== undefined) headers['receipt-id'] = receipt
    if (this.#ws.readyState === WebSocket.OPEN) this.#ws.send(serialize('ERROR', headers, fe.message))
    this.close(fe.closeCode, fe.code)
  }

  #startHeartbeats(outgoing: number, incoming: number): void {
    if (outgoing > 0) {
      const t = setInterval(() => {
        if (Date.now() - this.#lastSent >= outgoing * 0.9 && this.#ws.readyState === WebSocket.OPEN) {
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
        if (Date.now() - this.#lastReceived > allowance) {
          this.#setState('closed')
          this.#ws.terminate()
          this.#closed()
        }
      }, incoming)
      t.unref()
      this.#timers.push(t)
    }
  }

  #closed(): void {
    if (this.#cleaned) return
    this.#cleaned = true
    this.#setState('closed')
    for (const t of this.#timers) clearTimeout(t)
    this.#timers = []
    for (const sub of this.subscriptions.values()) this.#host.unsubscribe(sub)
    this.subscriptions.clear()
    this.#host.closed(this)
  }
}

function parseHeartbeat(value: string | undefined): [number, number] {
  const m = /^(\d{1,9}),(\d{1,9})$/.exec(value ?? '')
  return m ? [Number(m[1]), Number(m[2])] : [0, 0]
}
