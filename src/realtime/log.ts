/**
 * The realtime message log. Every message published on any instance gets an id from one dense,
 * commit-ordered sequence (a head row, locked by the publishing statement until it commits) and is
 * kept in `realtime_log` for the retention window, then announced on the bus. Every instance delivers
 * messages strictly in id order: the bus is the fast path, and any id it did not bring (reordered
 * between publishers, or lost) is read back from the log — so no message is ever skipped silently.
 * When the log no longer has an id (swept), affected subscribers get an explicit gap notice.
 */
import type { Logger } from 'pino'
import type { Bus } from '../bus/bus.js'
import { channels } from '../bus/channels.js'
import type { Sql } from '../db/connect.js'
import { schemaName, type SchemaName } from '../db/schema.js'
import { ChorusError, toError } from '../errors.js'
import type { Events } from '../events.js'
import { untilAborted } from '../util/abort.js'
import { Rerun } from '../util/rerun.js'

export interface LogMessage {
  readonly id: number
  readonly destination: string
  /** For `/user/…` destinations: the user it is for; '' otherwise. */
  readonly user: string
  readonly headers: Readonly<Record<string, string>>
  readonly body: string
}

export interface LogOptions {
  /** How long messages stay replayable. Default 2 minutes. */
  maxAgeMs: number
  /** How many messages per destination stay replayable. Default 1,000. */
  maxCount: number
  /** Messages waiting to be written before `publish` refuses. Default 10,000. */
  maxQueue: number
}

interface Pending {
  destination: string
  user: string
  headers: Record<string, string>
  body: string
  resolve(id: number): void
  reject(err: Error): void
}

/** How long a hole in the id sequence may wait for the bus before it is read from the log. */
const FILL_AFTER_MS = 25
const BATCH = 500

export class MessageLog {
  readonly #sql: Sql
  readonly #s: SchemaName
  readonly #bus: Bus
  readonly #log: Logger
  readonly #opts: LogOptions
  readonly #deliver: (m: LogMessage) => void
  readonly #lost: (fromId: number, toId: number) => void
  #queue: Pending[] = []
  /** Writes the queue until it is empty; asked again while it runs, it runs once more after. */
  readonly #flusher: Rerun
  /** The next id this instance will deliver. */
  #next = 0
  #held = new Map<number, LogMessage>()
  #fillTimer: NodeJS.Timeout | null = null
  #filling: Promise<void> | null = null
  #pollTimer: NodeJS.Timeout | null = null
  #sweepTimer: NodeJS.Timeout | null = null
  #lastArrival = Date.now()
  #off: (() => void)[] = []
  #closed = false

  constructor(deps: { sql: Sql; schema: string; bus: Bus; log: Logger; events: Events; options: LogOptions; deliver: (m: LogMessage) => void; lost: (fromId: number, toId: number) => void }) {
    this.#sql = deps.sql
    this.#s = schemaName(deps.sql, deps.schema)
    this.#bus = deps.bus
    this.#log = deps.log
    this.#opts = deps.options
    this.#deliver = deps.deliver
    this.#lost = deps.lost
    this.#flusher = new Rerun(() => this.#flush(), (err) => this.#log.error({ err: toError(err) }, 'flushing published messages failed'))
    this.#off.push(deps.events.on('bus:gap', () => this.#scheduleFill(0)))
  }

  /** The next id to be delivered here; everything below it has been delivered (or reported lost). */
  get next(): number {
    return this.#next
  }

  async start(): Promise<void> {
    const [row] = await this.#sql<{ last: string }[]>`select last from ${this.#s}.realtime_head`
    this.#next = Number(row!.last) + 1
    this.#off.push(this.#bus.subscribe(channels.realtime, (data) => this.#onBus(data)))
    this.#pollTimer = setInterval(() => void this.#poll(), 1000)
    this.#pollTimer.unref()
    this.#sweepTimer = setInterval(() => void this.sweep(), 10_000)
    this.#sweepTimer.unref()
  }

  /** Appends a message; resolves with its id once it is durable and announced. */
  publish(destination: string, user: string, headers: Record<string, string>, body: string): Promise<number> {
    if (this.#closed) return Promise.reject(new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', ['closed', 'a realtime publish']))
    if (this.#queue.length >= this.#opts.maxQueue) return Promise.reject(new ChorusError('CHORUS_ERR_REALTIME_QUEUE_FULL', [this.#opts.maxQueue]))
    return new Promise<number>((resolve, reject) => {
      this.#queue.push({ destination, user, headers, body, resolve, reject })
      void this.#flusher.run()
    })
  }

  get queued(): number {
    return this.#queue.length
  }

  async #flush(): Promise<void> {
    while (this.#queue.length > 0) {
      const batch = this.#queue.splice(0, BATCH)
      try {
        // One statement: the head row stays locked from the update to the commit, as the order of
        // ids needs, but no longer across a round trip to this client between its two parts.
        const [head] = await this.#sql<{ last: string }[]>`
          with head as (
            update ${this.#s}.realtime_head set last = last + ${batch.length} returning last
          ), logged as (
            insert into ${this.#s}.realtime_log (id, destination, user_name, headers, body)
            select head.last - ${batch.length} + m.n, m.destination, m.user_name, m.headers, m.body
            from head, unnest(
              ${batch.map((p) => p.destination)}::text[], ${batch.map((p) => p.user)}::text[],
              ${batch.map((p) => JSON.stringify(p.headers))}::jsonb[], ${batch.map((p) => p.body)}::text[]
            ) with ordinality as m(destination, user_name, headers, body, n)
          )
          select last from head`
        const first = Number(head!.last) - batch.length + 1
        batch.forEach((p, i) => {
          const id = first + i
          this.#bus.notify(channels.realtime, JSON.stringify([id, p.destination, p.user, p.headers, p.body]))
          p.resolve(id)
        })
      } catch (err) {
        const error = toError(err)
        for (const p of batch) p.reject(error)
      }
    }
  }

  #onBus(data: string): void {
    let m: LogMessage
    try {
      const [id, destination, user, headers, body] = JSON.parse(data) as [number, string, string, Record<string, string>, string]
      m = { id, destination, user, headers, body }
    } catch {
      this.#scheduleFill(0)
      return
    }
    this.#lastArrival = Date.now()
    this.#accept(m)
  }

  #accept(m: LogMessage): void {
    if (this.#closed || m.id < this.#next) return
    if (m.id > this.#next) {
      this.#held.set(m.id, m)
      this.#scheduleFill(this.#held.size > 10_000 ? 0 : FILL_AFTER_MS)
      return
    }
    this.#emit(m)
    this.#drainHeld()
  }

  #emit(m: LogMessage): void {
    this.#next = m.id + 1
    try {
      this.#deliver(m)
    } catch (err) {
      this.#log.error({ err: toError(err) }, 'delivery failed')
    }
  }

  #drainHeld(): void {
    for (let m = this.#held.get(this.#next); m; m = this.#held.get(this.#next)) {
      this.#held.delete(m.id)
      this.#emit(m)
    }
    if (this.#held.size === 0 && this.#fillTimer) {
      clearTimeout(this.#fillTimer)
      this.#fillTimer = null
    }
  }

  #scheduleFill(delay: number): void {
    if (this.#closed || this.#fillTimer) return
    this.#fillTimer = setTimeout(() => {
      this.#fillTimer = null
      void this.#fill()
    }, delay)
    this.#fillTimer.unref()
  }

  /** Reads from the log every id between what was delivered and what the bus brought (or the head). */
  #fill(): Promise<void> {
    this.#filling ??= (async () => {
      try {
        for (let round = 0; round < 100 && !this.#closed; round++) {
          const [head] = await this.#sql<{ last: string }[]>`select last from ${this.#s}.realtime_head`
          const headNext = Number(head!.last) + 1
          const heldMin = this.#held.size > 0 ? Math.min(...this.#held.keys()) : Number.POSITIVE_INFINITY
          const upto = Math.min(heldMin, headNext)
          if (this.#next < upto) {
            const limit = BATCH * 4
            const rows = await this.#sql<{ id: string; destination: string; user_name: string; headers: Record<string, string>; body: string }[]>`
              select id, destination, user_name, headers, body from ${this.#s}.realtime_log
              where id >= ${this.#next} and id < ${upto} order by id limit ${limit}`
            for (const r of rows) {
              const id = Number(r.id)
              if (id < this.#next) continue
              if (id > this.#next) {
                // Swept before this instance could read it: say so, then go on.
                this.#lost(this.#next, id - 1)
                this.#next = id
              }
              this.#emit({ id, destination: r.destination, user: r.user_name, headers: r.headers, body: r.body })
            }
            if (rows.length < limit && this.#next < upto) {
              this.#lost(this.#next, upto - 1)
              this.#next = upto
            }
          }
          this.#drainHeld()
          if (this.#held.size === 0 && this.#next >= headNext) break
        }
      } catch (err) {
        this.#log.warn({ err: toError(err) }, 'could not read missed messages from the log; will retry')
        setTimeout(() => this.#scheduleFill(0), 500).unref()
      } finally {
        this.#filling = null
        for (const id of this.#held.keys()) if (id < this.#next) this.#held.delete(id)
        if (this.#held.size > 0) this.#scheduleFill(FILL_AFTER_MS)
      }
    })()
    return this.#filling
  }

  /** Safety net for a lost tail (a message whose announcement never came and no later one followed). */
  async #poll(): Promise<void> {
    if (this.#closed || this.#filling || Date.now() - this.#lastArrival < 1000) return
    try {
      const [head] = await this.#sql<{ last: string }[]>`select last from ${this.#s}.realtime_head`
      if (Number(head!.last) >= this.#next) this.#scheduleFill(0)
    } catch {
      /* the next poll retries */
    }
  }

  /** The last id issued cluster-wide. */
  async head(): Promise<number> {
    const [row] = await this.#sql<{ last: string }[]>`select last from ${this.#s}.realtime_head`
    return Number(row!.last)
  }

  /** Messages for `destination` (and user) with id in (afterId, this.next), oldest first, at most `limit`. */
  async replay(destination: string, user: string, afterId: number, limit: number): Promise<{ messages: LogMessage[]; complete: boolean; swept: boolean }> {
    const [swept] = await this.#sql<{ upto: string }[]>`
      select upto from ${this.#s}.realtime_swept where destination = ${destination} and user_name = ${user}`
    const isSwept = !!swept && Number(swept.upto) > afterId
    const rows = await this.#sql<{ id: string; headers: Record<string, string>; body: string }[]>`
      select id, headers, body from ${this.#s}.realtime_log
      where destination = ${destination} and user_name = ${user} and id > ${afterId} and id < ${this.#next}
      order by id limit ${limit + 1}`
    const messages = rows.slice(0, limit).map((r) => ({ id: Number(r.id), destination, user, headers: r.headers, body: r.body }))
    return { messages, complete: rows.length <= limit, swept: isSwept }
  }

  /** Deletes messages past the retention window; one instance at a time cluster-wide. */
  async sweep(): Promise<number> {
    if (this.#closed) return 0
    try {
      return (await this.#sql.begin(async (tx) => {
        const [lock] = await tx<{ ok: boolean }[]>`select pg_try_advisory_xact_lock(hashtext('chorus.realtime.sweep')) as ok`
        if (!lock!.ok) return 0
        const deleted = await tx<{ destination: string; user_name: string; upto: string; n: string }[]>`
          with doomed as (
            select id from (
              select id, created_at, row_number() over (partition by destination, user_name order by id desc) as rn
              from ${this.#s}.realtime_log
            ) r
            where r.rn > ${this.#opts.maxCount} or r.created_at < now() - ${this.#opts.maxAgeMs} * interval '1 millisecond'
          ), gone as (
            delete from ${this.#s}.realtime_log l using doomed d where l.id = d.id returning l.destination, l.user_name, l.id
          )
          select destination, user_name, max(id) as upto, count(*) as n from gone group by destination, user_name`
        if (deleted.length > 0) {
          await tx`
            insert into ${this.#s}.realtime_swept (destination, user_name, upto)
            select * from unnest(${deleted.map((d) => d.destination)}::text[], ${deleted.map((d) => d.user_name)}::text[], ${deleted.map((d) => d.upto)}::bigint[])
            on conflict (destination, user_name) do update set upto = greatest(realtime_swept.upto, excluded.upto)`
        }
        return deleted.reduce((n, d) => n + Number(d.n), 0)
      })) as number
    } catch (err) {
      this.#log.debug({ err: toError(err) }, 'sweep failed; will retry')
      return 0
    }
  }

  async close(): Promise<void> {
    // Lets what was published so far be written (2 s at most), so its publishers get their ids.
    await untilAborted(this.#flusher.run(), AbortSignal.timeout(2000)).catch(() => undefined)
    this.#closed = true
    for (const off of this.#off) off()
    for (const t of [this.#fillTimer, this.#pollTimer]) if (t) clearTimeout(t)
    if (this.#sweepTimer) clearInterval(this.#sweepTimer)
    for (const p of this.#queue.splice(0)) p.reject(new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', ['closing', 'a realtime publish']))
  }
}
