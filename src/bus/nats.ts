/**
 * The NATS transport: core NATS publish/subscribe on one subject per cluster, `<prefix>.bus`, over
 * one connection (NATS echoes a connection's own messages to its subscriptions, so every instance
 * receives its own). Envelopes travel as frames (frame.ts).
 *
 * Client: nats.js v2 (`nats`), maintained by the NATS authors; its v3 line (`@nats-io/*`) declares
 * Node ≥ 22 in a dependency while Chorus supports Node 20.
 *
 * Guarantees: per-publisher order (one connection, written in order); at most once (core NATS
 * never redelivers; nothing here retries); loss reported: the client's `disconnect` status calls
 * `disconnected`, and after its `reconnect` a round trip (which the server answers only after it
 * has the resubscription) precedes `reconnected`, so messages published meanwhile are covered by
 * that gap. While the connection is down, publishes wait here (bounded by `maxQueueBytes`) and
 * leave in order once it is back: the client would discard what it buffered when it redials.
 * A publish resolves when a round trip after it completed (one round trip per batch).
 *
 * Size: a frame above the server's `max_payload` (1 MiB by default) is refused with
 * CHORUS_ERR_BUS_PAYLOAD_TOO_LARGE; at start a limit below `bus.maxPayloadBytes` is logged as a warning.
 */
import { connect, Events, type NatsConnection } from 'nats'
import type { Logger } from 'pino'
import { ChorusError, toError } from '../errors.js'
import { decodeFrame, encodeFrame, FRAME_HEADER_ALLOWANCE } from './frame.js'
import type { Envelope, Transport, TransportHandlers } from './transport.js'
import { checkPrefix, describeBusUrl } from './url.js'

export interface NatsTransportOptions {
  /** `nats://[user:password@]host:port`, or several such URLs separated by commas (one cluster). */
  url: string
  /** Keeps clusters apart on one NATS: the subject is `<prefix>.bus`. */
  prefix: string
  log: Logger
  /** The bus's `maxPayloadBytes`, to warn at start when the server's max_payload is below it. */
  maxPayloadBytes?: number
  /** Bytes of publishes waiting (for their round trip, or for the connection). Default: 16 MiB. */
  maxQueueBytes?: number
  /** Time allowed to reach the server at start. Default: 5000 ms. */
  connectTimeoutMs?: number
}

interface Pending {
  frame: Uint8Array
  bytes: number
  resolve(): void
  reject(err: Error): void
}

export class NatsTransport implements Transport {
  readonly #opts: NatsTransportOptions
  readonly #log: Logger
  readonly #subject: string
  readonly #maxQueueBytes: number
  #nc: NatsConnection | null = null
  #handlers: TransportHandlers | null = null
  #queuedBytes = 0
  /** The server's max_payload, as last seen (the client forgets it while disconnected). */
  #limit = 0
  /** Published, waiting for the round trip that confirms them. */
  #unconfirmed: Pending[] = []
  /** Waiting for the connection to come back. */
  #offline: Pending[] = []
  #confirming = false
  #online = false
  #receiving = false
  #closed = false

  constructor(opts: NatsTransportOptions) {
    this.#opts = opts
    this.#log = opts.log
    this.#subject = `${checkPrefix(opts.prefix)}.bus`
    this.#maxQueueBytes = opts.maxQueueBytes ?? 16 * 1024 * 1024
  }

  get queuedBytes(): number {
    return this.#queuedBytes
  }

  /** Largest frame this transport sends: the server's max_payload (known once started). */
  get maxEnvelopeBytes(): number {
    return this.#limit
  }

  async start(handlers: TransportHandlers): Promise<void> {
    this.#handlers = handlers
    const shown = describeBusUrl(this.#opts.url)
    let nc: NatsConnection
    try {
      nc = await connect({
        ...natsServers(this.#opts.url),
        name: `chorus-bus-${this.#opts.prefix}`,
        timeout: this.#opts.connectTimeoutMs ?? 5000,
        reconnect: true,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 250,
        reconnectJitter: 250,
        waitOnFirstConnect: false,
      })
    } catch (err) {
      throw new ChorusError('CHORUS_ERR_BUS_CONNECT', [shown, toError(err).message || String(err)], { cause: err, details: { url: shown } })
    }
    this.#nc = nc
    nc.subscribe(this.#subject, {
      callback: (err, msg) => {
        if (err) this.#log.warn({ err }, 'bus: the NATS subscription reported an error')
        else this.#onMessage(msg.data)
      },
    })
    void this.#watch(nc)
    try {
      await nc.flush()
    } catch (err) {
      this.#closed = true
      await nc.close().catch(() => undefined)
      throw new ChorusError('CHORUS_ERR_BUS_CONNECT', [shown, toError(err).message], { cause: err, details: { url: shown } })
    }
    this.#online = true
    this.#receiving = true
    this.#limit = nc.info?.max_payload ?? 0
    const limit = this.#limit
    const asked = this.#opts.maxPayloadBytes
    if (asked !== undefined && asked + FRAME_HEADER_ALLOWANCE > limit) {
      this.#log.warn(
        { serverLimitBytes: limit, maxPayloadBytes: asked },
        'bus: the NATS server takes messages of at most %d bytes (max_payload), less than bus.maxPayloadBytes and a header; larger publishes will be refused (CHORUS_ERR_BUS_PAYLOAD_TOO_LARGE). Raise max_payload or lower bus.maxPayloadBytes',
        limit,
      )
    }
    this.#log.info({ url: shown, subject: this.#subject, maxEnvelopeBytes: limit }, 'bus: subscribed on NATS')
  }

  /** Follows the client's status events until it closes. */
  async #watch(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (this.#closed) break
      if (s.type === Events.Disconnect) this.#onDisconnect(String(s.data))
      else if (s.type === Events.Reconnect) void this.#onReconnect(nc)
    }
    if (!this.#closed && this.#receiving) {
      // Closed for good (e.g. refused credentials on a reconnect): nothing more will arrive.
      this.#receiving = false
      this.#online = false
      const err = (await nc.closed()) ?? new Error('the NATS connection closed')
      this.#log.error({ err }, 'bus: the NATS connection closed for good; this instance receives nothing more')
      this.#handlers?.disconnected(err)
    }
  }

  #onDisconnect(server: string): void {
    this.#online = false
    if (!this.#receiving) return
    this.#receiving = false
    const error = new Error(`lost the connection to NATS at ${server}`)
    this.#log.warn({ err: error }, 'bus: lost the NATS connection; reconnecting')
    this.#handlers?.disconnected(error)
  }

  async #onReconnect(nc: NatsConnection): Promise<void> {
    // The server may have restarted with another max_payload.
    this.#limit = nc.info?.max_payload ?? this.#limit
    // What waited leaves first, in order, then new publishes go straight out again.
    const waiting = this.#offline.splice(0)
    this.#online = true
    for (const p of waiting) this.#publish(nc, p)
    try {
      // The server answers this round trip only after it has processed the resubscription.
      await nc.flush()
    } catch {
      return // disconnected again: the next reconnect reports
    }
    if (this.#closed || this.#receiving || !this.#online) return
    this.#receiving = true
    this.#log.info('bus: subscribed on NATS again; messages meanwhile may be lost')
    this.#handlers?.reconnected()
  }

  #onMessage(data: Uint8Array): void {
    let envelope: Envelope
    try {
      envelope = decodeFrame(data)
    } catch (err) {
      this.#log.warn({ err: toError(err) }, 'bus: ignored a malformed message on the NATS subject')
      return
    }
    try {
      this.#handlers?.deliver(envelope)
    } catch (err) {
      this.#log.error({ err: toError(err), channel: envelope.channel }, 'bus: a receiver failed')
    }
  }

  /** `bytes` (the data's size, as the bus counts it) is what `queuedBytes` adds up, so both limits agree. */
  send(envelope: Envelope, bytes: number): Promise<void> {
    const nc = this.#nc
    if (this.#closed || !nc) return Promise.reject(new ChorusError('CHORUS_ERR_BUS_CLOSED'))
    const frame = encodeFrame(envelope)
    const limit = this.maxEnvelopeBytes
    if (frame.length > limit) {
      return Promise.reject(new ChorusError('CHORUS_ERR_BUS_PAYLOAD_TOO_LARGE', [frame.length, limit], { details: { bytes: frame.length, limit, transport: 'nats' } }))
    }
    if (this.#queuedBytes + bytes > this.#maxQueueBytes) {
      return Promise.reject(new ChorusError('CHORUS_ERR_BUS_QUEUE_FULL', [this.#queuedBytes, this.#maxQueueBytes]))
    }
    this.#queuedBytes += bytes
    return new Promise<void>((resolve, reject) => {
      const settle = (ok: boolean, err?: Error) => {
        this.#queuedBytes -= bytes
        if (ok) resolve()
        else reject(err!)
      }
      const p: Pending = { frame, bytes, resolve: () => settle(true), reject: (err) => settle(false, err) }
      if (this.#online) this.#publish(nc, p)
      else this.#offline.push(p)
    })
  }

  #publish(nc: NatsConnection, p: Pending): void {
    try {
      nc.publish(this.#subject, p.frame)
    } catch (err) {
      p.reject(toError(err))
      return
    }
    this.#unconfirmed.push(p)
    if (!this.#confirming) void this.#confirm(nc)
  }

  /** One round trip per batch of publishes: each resolves once the server has seen it. */
  async #confirm(nc: NatsConnection): Promise<void> {
    this.#confirming = true
    try {
      while (this.#unconfirmed.length > 0) {
        const batch = this.#unconfirmed.splice(0)
        try {
          await nc.flush()
          for (const p of batch) p.resolve()
        } catch (err) {
          for (const p of batch) p.reject(toError(err))
        }
      }
    } finally {
      this.#confirming = false
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return
    const nc = this.#nc
    // Let publishes in flight leave (bounded) before the connection goes.
    const deadline = Date.now() + 2000
    while (this.#online && this.#unconfirmed.length + (this.#confirming ? 1 : 0) > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5))
    }
    this.#closed = true
    for (const p of this.#offline.splice(0)) p.reject(new ChorusError('CHORUS_ERR_BUS_CLOSED'))
    await nc?.close().catch(() => undefined)
    for (const p of this.#unconfirmed.splice(0)) p.reject(new ChorusError('CHORUS_ERR_BUS_CLOSED'))
    this.#handlers = null
  }
}

/** nats.js takes servers as host:port and credentials apart; the URL carries both. */
function natsServers(url: string): { servers: string[]; user?: string; pass?: string; token?: string } {
  const servers: string[] = []
  let user: string | undefined
  let pass: string | undefined
  for (const part of url.split(',')) {
    const u = new URL(part.trim())
    servers.push(`${u.hostname}:${u.port || '4222'}`) // an IPv6 hostname keeps its brackets
    if (u.username) user = decodeURIComponent(u.username)
    if (u.password) pass = decodeURIComponent(u.password)
  }
  if (user !== undefined && pass === undefined) return { servers, token: user }
  return { servers, ...(user === undefined ? {} : { user }), ...(pass === undefined ? {} : { pass }) }
}
