/**
 * One SUBSCRIBE of one connection, and the MESSAGE frames it is sent. A subscription sends every
 * message at most once and in id order: while a resume replays what it missed, live messages wait
 * (up to `maxReplay`, beyond which the client gets an `overflow` gap notice instead of silent loss).
 * A message's frame is encoded once per distinct subscription id and ack mode, not once per subscriber.
 */
import type { Connection } from './connection.js'
import { escapeHeader, serialize } from './frame.js'
import type { LogMessage } from './log.js'
import { textFrame, type WsFrame } from './wire.js'

/** Headers the gateway sets on MESSAGE frames; a message's own headers of these names are dropped. */
const reservedHeaders = new Set(['subscription', 'message-id', 'destination', 'content-length', 'ack', 'chorus-gap'])

/** The key of the routing table: subscriptions of one topic, or of one user's queue. */
export function routeKey(destination: string, user: string): string {
  return user ? `u:${user}:${destination}` : `t:${destination}`
}

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
    this.connection.writeFrame(frames.for(this.id, this.ack !== 'auto'))
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
 * and the whole frame — as the WebSocket frame that carries it — once per distinct subscription id
 * and ack mode (clients mostly number their subscriptions alike, e.g. `sub-0`), so a fan-out to many
 * subscribers encodes it once, not once each.
 */
export class MessageFrames {
  readonly #m: LogMessage
  #head: string | undefined
  #tail: string | undefined
  /** The frame asked for last: consecutive subscriptions mostly share it, so no key is built for them. */
  #lastId: string | undefined
  #lastAck = false
  #last: WsFrame | undefined
  readonly #built = new Map<string, WsFrame>()

  constructor(m: LogMessage) {
    this.#m = m
  }

  /** The frame for subscription `id`, with an `ack` header when the subscription acknowledges. */
  for(id: string, ack: boolean): WsFrame {
    if (id === this.#lastId && ack === this.#lastAck) return this.#last!
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
      frame = textFrame('MESSAGE\nsubscription:' + escapeHeader(id) + '\n' + this.#head + (ack ? 'ack:' + m.id + '\n' : '') + this.#tail)
      this.#built.set(key, frame)
    }
    this.#lastId = id
    this.#lastAck = ack
    this.#last = frame
    return frame
  }
}
