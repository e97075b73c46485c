/**
 * The PostgreSQL transport: LISTEN/NOTIFY on one channel per schema, logical channels multiplexed
 * inside the payload. Messages published in the same tick, or queued while a send is in flight,
 * leave together, packed into as few NOTIFYs as fit PostgreSQL's 8000-byte payload limit, in one
 * statement (one transaction, so one commit for the whole batch). A message too large for a NOTIFY
 * is written to `bus_payloads` in the same transaction and travels by reference. One dedicated
 * connection LISTENs; when it drops, the transport re-LISTENs with backoff and reports the possible
 * loss.
 *
 * NOTIFY payload format (lengths in UTF-16 code units, as JavaScript strings count them):
 *   <publisher>\n  then per message  <seq>|<I or R>|<channel length>|<data length>|<channel><data>
 * `I` carries the data inline; `R` carries the id of a `bus_payloads` row.
 */
import type { Logger } from 'pino'
import { reconnectDelayMs } from '../db/backoff.js'
import type { Db, Sql } from '../db/connect.js'
import { asyncCommit, schemaName, type SchemaName } from '../db/schema.js'
import { ChorusError, isChorusError, toError } from '../errors.js'
import type { Envelope, Transport, TransportHandlers } from './transport.js'

/** PostgreSQL refuses NOTIFY payloads of 8000 bytes or more. */
const NOTIFY_LIMIT = 7999
/** Most NOTIFYs sent in one statement. */
const MAX_NOTIFIES_PER_FLUSH = 256
/**
 * A batch not sent by then fails (`CHORUS_ERR_BUS_SEND_TIMEOUT`) and the publish connection is
 * replaced: batches leave one at a time, so one statement that never settles would otherwise stop
 * every later publish of this instance. Far above a healthy batch's round trip.
 */
const SEND_DEADLINE_MS = 5000

interface Pending {
  envelope: Envelope
  bytes: number
  resolve(): void
  reject(err: Error): void
}

export interface PostgresTransportOptions {
  db: Db
  log: Logger
  payloadRetentionMs: number
}

export class PostgresTransport implements Transport {
  readonly #db: Db
  readonly #log: Logger
  readonly #channel: string
  readonly #retentionMs: number
  readonly #s: SchemaName
  /** Publishing commits without waiting for the WAL flush (see `#publish`). */
  readonly #asyncCommit: ReturnType<typeof asyncCommit>
  #listen: Sql | null = null
  /**
   * One connection for publishing (batches leave one at a time anyway), committing without waiting
   * for the WAL flush: delivery is at-most-once, so a crash losing the last milliseconds of
   * notifications costs nothing the bus promised, and each batch saves a disk flush of latency.
   */
  #publish: Sql | null = null
  #handlers: TransportHandlers | null = null
  #queue: Pending[] = []
  #queuedBytes = 0
  #flushing = false
  #closed = false
  #connected = false
  #relistening = false
  #ordered = new Map<string, Promise<void>>()
  #sweepTimer: NodeJS.Timeout | null = null

  constructor(opts: PostgresTransportOptions) {
    this.#db = opts.db
    this.#log = opts.log
    this.#channel = `${opts.db.schema}_bus`
    this.#retentionMs = opts.payloadRetentionMs
    this.#s = schemaName(opts.db.sql, opts.db.schema)
    this.#asyncCommit = asyncCommit(opts.db.sql)
  }

  get queuedBytes(): number {
    return this.#queuedBytes
  }

  async start(handlers: TransportHandlers): Promise<void> {
    this.#handlers = handlers
    this.#publish = this.#db.open('publish', 1)
    // LISTEN needs a real session: the direct URL when the work URL is a pooler.
    this.#listen = this.#db.openSession('listen', 1, {
      idle_timeout: null as unknown as number,
      max_lifetime: null,
      onnotify: (_channel: string, payload: string) => this.#onNotify(payload),
      onclose: () => this.#onClose(),
    } as Record<string, unknown>)
    await this.#listenOnce()
    this.#connected = true
    this.#sweepTimer = setInterval(() => void this.#sweep(), Math.max(1000, Math.min(this.#retentionMs, 30_000)))
    this.#sweepTimer.unref()
  }

  async #listenOnce(): Promise<void> {
    await this.#listen!.unsafe(`listen "${this.#channel}"`)
  }

  #onClose(): void {
    if (this.#closed || !this.#connected) return
    this.#connected = false
    this.#handlers?.disconnected(new Error('the LISTEN connection closed'))
    void this.#relisten()
  }

  async #relisten(): Promise<void> {
    if (this.#relistening) return
    this.#relistening = true
    try {
      for (let attempt = 0; !this.#closed; attempt++) {
        try {
          await this.#listenOnce()
          this.#connected = true
          this.#handlers?.reconnected()
          return
        } catch (err) {
          const delay = reconnectDelayMs(attempt)
          this.#log.warn({ err: toError(err), retryInMs: Math.round(delay) }, 'bus: re-LISTEN failed')
          await new Promise((r) => setTimeout(r, delay))
        }
      }
    } finally {
      this.#relistening = false
    }
  }

  send(envelope: Envelope, bytes: number): Promise<void> {
    if (this.#closed) return Promise.reject(new ChorusError('CHORUS_ERR_BUS_CLOSED'))
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ envelope, bytes, resolve, reject })
      this.#queuedBytes += bytes
      if (!this.#flushing) {
        // Start on the next microtask, not now: every message published in the same tick then
        // leaves in the first batch instead of waiting for a lone first message's round trip.
        this.#flushing = true
        queueMicrotask(() => void this.#flush())
      }
    })
  }

  async #flush(): Promise<void> {
    this.#flushing = true
    try {
      while (this.#queue.length > 0) {
        const { batch, payloads, refs } = this.#takeBatch()
        try {
          await this.#sendWithin(payloads, refs, batch.length)
          for (const p of batch) p.resolve()
        } catch (err) {
          const error = toError(err)
          this.#log.warn({ err: error, messages: batch.length }, 'bus: a batch could not be sent; its messages are lost')
          for (const p of batch) p.reject(error)
        } finally {
          for (const p of batch) this.#queuedBytes -= p.bytes
        }
      }
    } finally {
      this.#flushing = false
    }
  }

  /** Takes queued messages and packs them into NOTIFY payloads; large ones become references. */
  #takeBatch(): { batch: Pending[]; payloads: string[]; refs: { index: number; data: string }[] } {
    const batch: Pending[] = []
    const payloads: string[] = []
    const refs: { index: number; data: string }[] = []
    let publisher = ''
    let current = ''
    let currentBytes = 0
    const close = () => {
      if (current) payloads.push(current)
      current = ''
      currentBytes = 0
    }
    // Taken messages leave the queue in one splice at the end: shift() per message is linear in
    // the queue's length once it is large, which made a burst of publishes quadratic.
    const queue = this.#queue
    let taken = 0
    while (taken < queue.length && payloads.length < MAX_NOTIFIES_PER_FLUSH) {
      const p = queue[taken]!
      const e = p.envelope
      if (publisher && e.publisher !== publisher) break
      publisher = e.publisher
      const header = `${e.publisher}\n`
      const headerBytes = Buffer.byteLength(header)
      const channelBytes = Buffer.byteLength(e.channel)
      let part = `${e.seq}|I|${e.channel.length}|${e.data.length}|${e.channel}${e.data}`
      let partBytes = part.length - e.channel.length - e.data.length + channelBytes + p.bytes
      // NUL cannot travel in a NOTIFY, and \u0001 inline could be taken for a reference marker below.
      if (headerBytes + partBytes > NOTIFY_LIMIT || /[\u0000\u0001]/.test(e.data)) {
        // By reference: the row id is filled in when the batch is sent.
        const marker = `\u0001REF${refs.length}\u0001`
        refs.push({ index: refs.length, data: e.data })
        part = `${e.seq}|R|${e.channel.length}|${REF_WIDTH}|${e.channel}${marker}`
        partBytes = Buffer.byteLength(part) + REF_WIDTH
      }
      if (currentBytes + partBytes > NOTIFY_LIMIT) close()
      if (!current) {
        current = header
        currentBytes = headerBytes
      }
      current += part
      currentBytes += partBytes
      batch.push(p)
      taken++
    }
    queue.splice(0, taken)
    close()
    return { batch, payloads, refs }
  }

  /** Sends a batch, or fails it after SEND_DEADLINE_MS and replaces the connection it is stuck on. */
  async #sendWithin(payloads: string[], refs: { index: number; data: string }[], messages: number): Promise<void> {
    const sending = this.#sendBatch(payloads, refs)
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ChorusError('CHORUS_ERR_BUS_SEND_TIMEOUT', [messages, SEND_DEADLINE_MS])), SEND_DEADLINE_MS)
    })
    try {
      await Promise.race([sending, late])
    } catch (err) {
      if (isChorusError(err, 'CHORUS_ERR_BUS_SEND_TIMEOUT')) {
        sending.catch(() => undefined) // settles when the replaced connection ends
        this.#replacePublish()
      }
      throw err
    } finally {
      clearTimeout(timer)
    }
  }

  #replacePublish(): void {
    const stuck = this.#publish
    if (this.#closed || !stuck) return
    this.#log.warn({ deadlineMs: SEND_DEADLINE_MS }, 'bus: a batch did not settle in time; replacing the publish connection')
    this.#publish = this.#db.open('publish', 1)
    void stuck.end({ timeout: 0 }).catch(() => undefined)
  }

  async #sendBatch(payloads: string[], refs: { index: number; data: string }[]): Promise<void> {
    const sql = this.#publish ?? this.#db.sql
    if (refs.length === 0) {
      if (payloads.length === 1) await sql`select pg_notify(${this.#channel}, ${payloads[0]!}) where ${this.#asyncCommit}`
      else await sql`select pg_notify(${this.#channel}, p) from unnest(${payloads}::text[]) as t(p) where ${this.#asyncCommit}`
      return
    }
    await sql.begin(async (tx) => {
      const ids: string[] = []
      for (const r of refs) {
        const [row] = await tx<{ id: string }[]>`insert into ${this.#s}.bus_payloads (data) values (${Buffer.from(r.data, 'utf8')}) returning id`
        ids.push(String(row!.id))
      }
      const filled = payloads.map((payload) => payload.replace(/\u0001REF(\d+)\u0001/g, (_m, i: string) => pad(ids[Number(i)]!)))
      await tx`select pg_notify(${this.#channel}, p) from unnest(${filled}::text[]) as t(p) where ${this.#asyncCommit}`
    })
  }

  #onNotify(payload: string): void {
    let messages: { publisher: string; seq: number; kind: string; channel: string; data: string }[]
    try {
      messages = parsePayload(payload)
    } catch (err) {
      this.#log.warn({ err: toError(err) }, 'bus: ignored a malformed notification')
      return
    }
    for (const m of messages) {
      const chain = this.#ordered.get(m.publisher)
      if (m.kind === 'I' && !chain) {
        this.#deliver({ publisher: m.publisher, seq: m.seq, channel: m.channel, data: m.data })
        continue
      }
      const next = (chain ?? Promise.resolve()).then(async () => {
        if (m.kind === 'I') return this.#deliver({ publisher: m.publisher, seq: m.seq, channel: m.channel, data: m.data })
        const data = await this.#fetch(m.data.trim())
        if (data === null) this.#handlers?.lost(m.publisher, m.seq)
        else this.#deliver({ publisher: m.publisher, seq: m.seq, channel: m.channel, data })
      })
      this.#ordered.set(m.publisher, next)
      void next.finally(() => {
        if (this.#ordered.get(m.publisher) === next) this.#ordered.delete(m.publisher)
      })
    }
  }

  async #fetch(id: string): Promise<string | null> {
    try {
      const [row] = await this.#db.sql<{ data: Buffer }[]>`select data from ${this.#s}.bus_payloads where id = ${id}`
      return row ? row.data.toString('utf8') : null
    } catch (err) {
      this.#log.warn({ err: toError(err), id }, 'bus: could not fetch a payload sent by reference')
      return null
    }
  }

  #deliver(e: Envelope): void {
    try {
      this.#handlers?.deliver(e)
    } catch (err) {
      this.#log.error({ err: toError(err), channel: e.channel }, 'bus: a receiver failed')
    }
  }

  async #sweep(): Promise<void> {
    try {
      await this.#db.sql`delete from ${this.#s}.bus_payloads where created_at < now() - ${this.#retentionMs + ' milliseconds'}::interval`
    } catch (err) {
      this.#log.debug({ err: toError(err) }, 'bus: payload sweep failed; will retry')
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return
    // Let queued messages leave before the connections go.
    const deadline = Date.now() + 2000
    while ((this.#flushing || this.#queue.length > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5))
    this.#closed = true
    if (this.#sweepTimer) clearInterval(this.#sweepTimer)
    for (const p of this.#queue.splice(0)) p.reject(new ChorusError('CHORUS_ERR_BUS_CLOSED'))
    await this.#listen?.end({ timeout: 1 }).catch(() => undefined)
    await this.#publish?.end({ timeout: 1 }).catch(() => undefined)
    this.#handlers = null
  }
}

/** Row ids are padded to a fixed width so the reference's length is known before the insert. */
const REF_WIDTH = 20

function pad(id: string): string {
  return id.padStart(REF_WIDTH, ' ')
}

function readInt(s: string, from: number, stop: number): [number, number] {
  const end = s.indexOf('|', from)
  if (end < 0 || end > stop || end === from) throw new Error('bad number')
  const n = Number(s.slice(from, end))
  if (!Number.isSafeInteger(n) || n < 0) throw new Error('bad number')
  return [n, end + 1]
}

export function parsePayload(payload: string): { publisher: string; seq: number; kind: string; channel: string; data: string }[] {
  const nl = payload.indexOf('\n')
  if (nl <= 0) throw new Error('no publisher')
  const publisher = payload.slice(0, nl)
  const out = []
  let pos = nl + 1
  const len = payload.length
  while (pos < len) {
    let seq: number, cl: number, dl: number
    ;[seq, pos] = readInt(payload, pos, len)
    const kind = payload[pos]
    if ((kind !== 'I' && kind !== 'R') || payload[pos + 1] !== '|') throw new Error('bad kind')
    pos += 2
    ;[cl, pos] = readInt(payload, pos, len)
    ;[dl, pos] = readInt(payload, pos, len)
    if (pos + cl + dl > len) throw new Error('truncated')
    const channel = payload.slice(pos, pos + cl)
    const data = payload.slice(pos + cl, pos + cl + dl)
    pos += cl + dl
    out.push({ publisher, seq, kind, channel, data })
  }
  return out
}
