/**
 * The Redis transport: Pub/Sub on one Redis channel per cluster, `<prefix>:bus` (Pub/Sub channels
 * ignore the database number, so the prefix is what keeps two clusters on one Redis apart). One
 * connection publishes, one subscribes; envelopes travel as frames (frame.ts).
 *
 * Client: node-redis (`redis`), the client the Redis project maintains and recommends for new code
 * (ioredis is in maintenance). It resubscribes after a reconnect before it reports `ready`, keeps
 * commands issued while disconnected and sends them, in order, once connected again.
 *
 * Guarantees: per-publisher order (one publish connection, pipelined in order); at most once (a
 * publish whose connection dropped before its reply fails and is never retried); loss reported: the
 * subscriber's lost connection calls `disconnected`, and `reconnected` follows once it is subscribed
 * again, so messages published meanwhile are covered by that gap. Publishes while the publish
 * connection is down wait (bounded by `maxQueueBytes`) instead of being dropped.
 *
 * Size: a message whose frame exceeds the server's limit is refused (CHORUS_ERR_BUS_PAYLOAD_TOO_LARGE).
 * The limit is half the server's Pub/Sub output-buffer hard limit (a subscriber whose buffer passes
 * it is disconnected; half leaves room for the allocator's rounding and a second message), or
 * `proto-max-bulk-len` if smaller, read with CONFIG GET at start (defaults assumed where CONFIG is
 * disabled). Sharded Pub/Sub (SSUBSCRIBE/SPUBLISH, Redis ≥ 7) is used when `sharded` says so.
 */
import type { Logger } from 'pino'
import { createClient } from 'redis'
import { reconnectDelayMs } from '../db/backoff.js'
import { ChorusError, toError } from '../errors.js'
import { decodeFrame, encodeFrame, FRAME_HEADER_ALLOWANCE } from './frame.js'
import type { Envelope, Transport, TransportHandlers } from './transport.js'
import { checkPrefix, describeBusUrl } from './url.js'

export interface RedisTransportOptions {
  /** `redis://[user:password@]host:port` or `rediss://…` (TLS). */
  url: string
  /** Keeps clusters apart on one Redis: the channel is `<prefix>:bus`. */
  prefix: string
  log: Logger
  /**
   * Sharded Pub/Sub: `true` requires it (Redis ≥ 7), `'auto'` uses it when the server has it,
   * `false` (default) uses classic PUBLISH/SUBSCRIBE. Every instance of a cluster must agree.
   */
  sharded?: boolean | 'auto'
  /** The bus's `maxPayloadBytes`, to warn at start when the server's limit is below it. */
  maxPayloadBytes?: number
  /** Bytes of publishes waiting (for a reply, or for the connection to come back). Default: 16 MiB. */
  maxQueueBytes?: number
  /** Time allowed to reach the server at start. Default: 5000 ms. */
  connectTimeoutMs?: number
}

function openClient(url: string, name: string, socket: { connectTimeout: number; reconnectStrategy: (retries: number) => number | false }) {
  // No per-command timeout (node-redis's default drops a command not written within 5 s): a burst
  // or an outage makes publishes wait, and what bounds them is `maxQueueBytes`.
  return createClient({ url, name, socket, commandOptions: { timeout: 0 } })
}
type Client = ReturnType<typeof openClient>

/** A CONFIG GET reply's value: RESP2 answers [name, value], RESP3 a map. */
function configValue(reply: unknown): string | undefined {
  if (Array.isArray(reply)) return reply[1] === undefined ? undefined : String(reply[1])
  if (reply instanceof Map) return reply.size ? String([...reply.values()][0]) : undefined
  if (reply && typeof reply === 'object') {
    const values = Object.values(reply)
    return values.length ? String(values[0]) : undefined
  }
  return undefined
}

/** Redis's defaults, assumed where CONFIG GET is refused (managed services often rename CONFIG). */
const DEFAULT_BULK_LEN = 512 * 1024 * 1024
const DEFAULT_PUBSUB_HARD_LIMIT = 32 * 1024 * 1024

export class RedisTransport implements Transport {
  readonly #opts: RedisTransportOptions
  readonly #log: Logger
  readonly #channel: string
  readonly #maxQueueBytes: number
  #pub: Client | null = null
  #sub: Client | null = null
  #handlers: TransportHandlers | null = null
  #sharded = false
  #limit = 0
  #queuedBytes = 0
  readonly #inflight = new Set<Promise<unknown>>()
  #started = false
  #closed = false
  /** The subscriber is subscribed (false from a lost connection until it is subscribed again). */
  #receiving = false
  #publishDown = false

  constructor(opts: RedisTransportOptions) {
    this.#opts = opts
    this.#log = opts.log
    this.#channel = `${checkPrefix(opts.prefix)}:bus`
    this.#maxQueueBytes = opts.maxQueueBytes ?? 16 * 1024 * 1024
  }

  get queuedBytes(): number {
    return this.#queuedBytes
  }

  /** Largest frame this transport sends (known once started). */
  get maxEnvelopeBytes(): number {
    return this.#limit
  }

  /** True when sharded Pub/Sub is in use (known once started). */
  get sharded(): boolean {
    return this.#sharded
  }

  async start(handlers: TransportHandlers): Promise<void> {
    this.#handlers = handlers
    const shown = describeBusUrl(this.#opts.url)
    const socket = {
      connectTimeout: this.#opts.connectTimeoutMs ?? 5000,
      // Before start succeeds, a failure is final (start reports it); after, retry for ever.
      reconnectStrategy: (retries: number) => (this.#started && !this.#closed ? reconnectDelayMs(retries) : false),
    }
    const pub = openClient(this.#opts.url, `chorus-bus-pub-${this.#opts.prefix}`, socket)
    const sub = openClient(this.#opts.url, `chorus-bus-sub-${this.#opts.prefix}`, socket)
    this.#pub = pub
    this.#sub = sub
    pub.on('error', (err: unknown) => this.#onPublishError(err))
    pub.on('ready', () => this.#onPublishReady())
    sub.on('error', (err: unknown) => this.#onSubscribeError(err))
    sub.on('ready', () => this.#onSubscribeReady())
    try {
      await pub.connect()
      await this.#readServer(pub)
      await sub.connect()
      const listener = (message: Buffer) => this.#onMessage(message)
      if (this.#sharded) await sub.sSubscribe(this.#channel, listener, true)
      else await sub.subscribe(this.#channel, listener, true)
    } catch (err) {
      this.#closed = true
      pub.destroy()
      sub.destroy()
      if (err instanceof ChorusError) throw err
      throw new ChorusError('CHORUS_ERR_BUS_CONNECT', [shown, toError(err).message || String(err)], { cause: err, details: { url: shown } })
    }
    this.#receiving = true
    this.#started = true
    this.#log.info({ url: shown, channel: this.#channel, sharded: this.#sharded, maxEnvelopeBytes: this.#limit }, 'bus: subscribed on Redis')
  }

  /** Learns the server's message limit and whether it has sharded Pub/Sub. */
  async #readServer(pub: Client): Promise<void> {
    this.#limit = await messageLimit(pub, this.#log)
    const want = this.#opts.sharded ?? false
    if (want !== false) {
      const has = await hasShardedPubSub(pub)
      if (want === true && !has) {
        throw new ChorusError('CHORUS_ERR_BUS_URL_INVALID', [describeBusUrl(this.#opts.url), 'sharded Pub/Sub was asked for, and this server has no SSUBSCRIBE (Redis 7 or later has it)'])
      }
      this.#sharded = has
    }
    const asked = this.#opts.maxPayloadBytes
    if (asked !== undefined && asked + FRAME_HEADER_ALLOWANCE > this.#limit) {
      this.#log.warn(
        { serverLimitBytes: this.#limit, maxPayloadBytes: asked },
        'bus: the Redis server takes messages of at most %d bytes (half its Pub/Sub client-output-buffer-limit, or proto-max-bulk-len), less than bus.maxPayloadBytes and a header; larger publishes will be refused (CHORUS_ERR_BUS_PAYLOAD_TOO_LARGE). Raise the server limit or lower bus.maxPayloadBytes',
        this.#limit,
      )
    }
  }

  #onMessage(message: Buffer): void {
    let envelope: Envelope
    try {
      envelope = decodeFrame(message)
    } catch (err) {
      this.#log.warn({ err: toError(err) }, 'bus: ignored a malformed message on the Redis channel')
      return
    }
    try {
      this.#handlers?.deliver(envelope)
    } catch (err) {
      this.#log.error({ err: toError(err), channel: envelope.channel }, 'bus: a receiver failed')
    }
  }

  #onSubscribeError(err: unknown): void {
    if (!this.#started || this.#closed || !this.#receiving) return
    this.#receiving = false
    const error = toError(err)
    this.#log.warn({ err: error }, 'bus: lost the Redis subscription; reconnecting')
    this.#handlers?.disconnected(error)
  }

  #onSubscribeReady(): void {
    // node-redis has resubscribed by the time it reports ready.
    if (!this.#started || this.#closed || this.#receiving) return
    this.#receiving = true
    this.#log.info('bus: subscribed on Redis again; messages meanwhile may be lost')
    this.#handlers?.reconnected()
  }

  #onPublishError(err: unknown): void {
    if (!this.#started || this.#closed || this.#publishDown) return
    this.#publishDown = true
    this.#log.warn({ err: toError(err) }, 'bus: lost the Redis publish connection; publishes wait for it')
  }

  #onPublishReady(): void {
    if (!this.#started || this.#closed || !this.#publishDown) return
    this.#publishDown = false
    this.#log.info('bus: the Redis publish connection is back')
    // The server may have restarted with another configuration.
    const pub = this.#pub
    if (pub) void messageLimit(pub, this.#log).then((limit) => void (this.#limit = limit), () => undefined)
  }

  /** `bytes` (the data's size, as the bus counts it) is what `queuedBytes` adds up, so both limits agree. */
  send(envelope: Envelope, bytes: number): Promise<void> {
    const pub = this.#pub
    if (this.#closed || !pub) return Promise.reject(new ChorusError('CHORUS_ERR_BUS_CLOSED'))
    const frame = encodeFrame(envelope)
    if (frame.length > this.#limit) {
      return Promise.reject(new ChorusError('CHORUS_ERR_BUS_PAYLOAD_TOO_LARGE', [frame.length, this.#limit], { details: { bytes: frame.length, limit: this.#limit, transport: 'redis' } }))
    }
    if (this.#queuedBytes + bytes > this.#maxQueueBytes) {
      return Promise.reject(new ChorusError('CHORUS_ERR_BUS_QUEUE_FULL', [this.#queuedBytes, this.#maxQueueBytes]))
    }
    this.#queuedBytes += bytes
    let sent: Promise<unknown>
    try {
      sent = this.#sharded ? pub.sPublish(this.#channel, frame) : pub.publish(this.#channel, frame)
    } catch (err) {
      sent = Promise.reject(err)
    }
    const done = sent.then(
      () => undefined,
      (err: unknown) => {
        throw toError(err)
      },
    )
    const tracked = done.finally(() => {
      this.#queuedBytes -= bytes
      this.#inflight.delete(tracked)
    })
    tracked.catch(() => undefined)
    this.#inflight.add(tracked)
    return done
  }

  async close(): Promise<void> {
    if (this.#closed) return
    // Let publishes in flight leave (bounded) before the connections go.
    if (this.#inflight.size > 0) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([Promise.allSettled([...this.#inflight]), new Promise((r) => (timer = setTimeout(r, 2000)))])
      clearTimeout(timer)
    }
    this.#closed = true
    this.#sub?.destroy()
    this.#pub?.destroy()
    this.#handlers = null
  }
}

/** The largest frame the server passes on to subscribers without cutting them off. */
async function messageLimit(client: Client, log: Logger): Promise<number> {
  let bulk = DEFAULT_BULK_LEN
  let hard = DEFAULT_PUBSUB_HARD_LIMIT
  try {
    const bulkValue = configValue(await client.sendCommand(['CONFIG', 'GET', 'proto-max-bulk-len']))
    const buffers = configValue(await client.sendCommand(['CONFIG', 'GET', 'client-output-buffer-limit']))
    if (Number(bulkValue) > 0) bulk = Number(bulkValue)
    const pubsub = /pubsub (\d+) (\d+) (\d+)/.exec(buffers ?? '')
    if (pubsub) hard = Number(pubsub[1])
  } catch (err) {
    log.info({ err: toError(err) }, "bus: CONFIG GET is not allowed on this Redis; assuming Redis's default limits")
  }
  return hard > 0 ? Math.min(bulk, Math.floor(hard / 2)) : bulk
}

async function hasShardedPubSub(client: Client): Promise<boolean> {
  try {
    const [info] = (await client.sendCommand(['COMMAND', 'INFO', 'SPUBLISH'])) as unknown[]
    return Array.isArray(info)
  } catch {
    return false
  }
}
