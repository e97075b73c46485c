/**
 * One subscriber of a reliable topic: reads the log in offset order and hands each message to its
 * handler, one at a time. With a group, the position is the group's committed offset in the
 * database (written after each batch, fenced by the group's lease) and only the lease holder
 * delivers; other subscriptions of the group stand by and take the lease over once its holder is
 * no longer a live member under the epoch it took the lease with. Wake-ups come from the bus; a
 * slow safety poll covers lost ones. No busy polling.
 */
import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { Bus } from '../bus/bus.js'
import { reconnectDelayMs } from '../db/backoff.js'
import type { Sql } from '../db/connect.js'
import { schemaName, type SchemaName } from '../db/schema.js'
import { ChorusError, toError } from '../errors.js'
import type { Events } from '../events.js'
import type { Membership } from '../membership/membership.js'
import { checkName, type Codec } from './codec.js'

export interface ReliableMessageMeta {
  readonly offset: number
  readonly publishedAt: Date
  /** Instance id of the publisher. */
  readonly publisher: string
}

export type ReliableHandler<T> = (message: T, meta: ReliableMessageMeta) => unknown

/** Offsets `from`…`to` (inclusive) were removed by retention before this subscriber read them. */
export interface ReliableGap {
  readonly from: number
  readonly to: number
  readonly missed: number
}

export interface ReliableSubscribeOptions {
  /**
   * Where a subscription without a group, or a group seen for the first time, starts: `'latest'`
   * (messages published from now on; the default), `'earliest'` (the oldest retained message), or
   * an offset (≥ 1). An existing group always resumes after its committed offset.
   */
  from?: 'latest' | 'earliest' | number
  /** Consumer group: the position is stored in the database and one subscription in the cluster delivers. */
  group?: string
  /** Called when messages this subscriber should have read were already removed by retention; delivery then goes on from the oldest retained. */
  onGap?: (gap: ReliableGap) => void
  /** Messages read per query, and so most messages delivered again after a crash (see docs/state.md). Default 100, at most 10 000. */
  batchSize?: number
  /** Safety poll interval in ms, for wake-ups lost on the bus. Default 2000. */
  pollMs?: number
}

/** What a reliable topic and its subscriptions need from the cluster. */
export interface ReliableTopicDeps {
  sql: Sql
  /** The Chorus schema. Default: `chorus`. */
  schema?: string
  bus: Bus
  events: Events
  members: Membership
  log: Logger
  instanceId: string
}

interface TopicRef<T> {
  name: string
  channel: string
  codec: Codec<T>
}

interface Row {
  head: string
  msg_offset: string | null
  data: string | null
  publisher: string | null
  published_at: Date | null
}

/**
 * - `starting`: finding its position (and trying to take the group's lease).
 * - `standby`: a group subscription whose lease another live instance holds; waits to take it over.
 * - `active`: delivering.
 * - `closed`: done; the group's lease (if held) was released.
 */
export type SubscriptionState = 'starting' | 'standby' | 'active' | 'closed'

const MAX_RETRY_MS = 5000

export class ReliableSubscription<T> {
  readonly topic: string
  readonly group: string | null
  readonly #ref: TopicRef<T>
  readonly #handler: ReliableHandler<T>
  readonly #deps: ReliableTopicDeps
  readonly #s: SchemaName
  readonly #from: 'latest' | 'earliest' | number
  readonly #onGap: ((gap: ReliableGap) => void) | undefined
  readonly #batch: number
  readonly #pollMs: number
  readonly #token = randomBytes(9).toString('base64url')
  readonly #forget: () => void
  readonly #log: Logger
  #state: SubscriptionState = 'starting'
  /** The next offset to deliver. */
  #next = 1
  /** Group: the offset last written as committed. */
  #committed = 0
  /** Group: the epoch under which this subscription holds the lease, or null. */
  #leaseEpoch: number | null = null
  #wanted = false
  #loop: Promise<void> | null = null
  #poll: NodeJS.Timeout | null = null
  #retry: NodeJS.Timeout | null = null
  #retryAt = 0
  #failures = 0
  /** Runs that failed in a row on a database error; the retry backs off on it. */
  #dbFailures = 0
  #lastErrorLog = 0
  readonly #off: (() => void)[] = []

  /** @internal created by `ReliableTopic.subscribe` */
  constructor(ref: TopicRef<T>, handler: ReliableHandler<T>, opts: ReliableSubscribeOptions, deps: ReliableTopicDeps, forget: () => void) {
    if (typeof handler !== 'function') throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', ['handler', 'must be a function'], { details: { option: 'handler' } })
    const from = opts.from ?? 'latest'
    if (from !== 'latest' && from !== 'earliest' && !(typeof from === 'number' && Number.isSafeInteger(from) && from >= 1)) {
      throw new ChorusError('CHORUS_ERR_STATE_OFFSET_INVALID', [ref.name, JSON.stringify(from)], { details: { from } })
    }
    if (opts.group !== undefined) checkName('group', opts.group)
    const batch = opts.batchSize ?? 100
    if (!Number.isInteger(batch) || batch < 1 || batch > 10_000) throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', ['batchSize', 'must be an integer from 1 to 10000'], { details: { option: 'batchSize' } })
    const pollMs = opts.pollMs ?? 2000
    if (!Number.isInteger(pollMs) || pollMs < 50) throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', ['pollMs', 'must be an integer of at least 50'], { details: { option: 'pollMs' } })
    this.topic = ref.name
    this.group = opts.group ?? null
    this.#ref = ref
    this.#handler = handler
    this.#deps = deps
    this.#s = schemaName(deps.sql, deps.schema ?? 'chorus')
    this.#from = from
    this.#onGap = opts.onGap
    this.#batch = batch
    this.#pollMs = pollMs
    this.#forget = forget
    this.#log = deps.log.child({ subsystem: 'reliable-topic', topic: ref.name, group: this.group })
  }

  get state(): SubscriptionState {
    return this.#state
  }

  /** The offset of the next message this subscription will deliver. */
  get position(): number {
    return this.#next
  }

  /** @internal */
  async start(): Promise<void> {
    const d = this.#deps
    this.#off.push(
      d.bus.subscribe(this.#ref.channel, (data) => {
        if (this.#state === 'standby' || (this.#state === 'active' && Number(data) >= this.#next)) this.#wake()
      }),
      d.events.on('bus:gap', () => this.#wake()),
      d.events.on('member:down', () => {
        if (this.#state === 'standby') this.#wake()
      }),
      d.events.on('member:self:isolated', () => this.#isolated()),
      d.events.on('member:self:rejoined', () => this.#wake()),
    )
    if (this.group === null) {
      this.#next = await this.#startOffset()
      this.#setState('active')
    } else {
      await this.#acquire()
    }
    this.#poll = setInterval(() => this.#wake(), this.#pollMs)
    this.#poll.unref()
    this.#wake()
  }

  /**
   * Stops delivering (a handler running now finishes first), commits the group's position and
   * releases its lease so a standby elsewhere takes over at once.
   */
  async close(): Promise<void> {
    if (this.#state === 'closed') return
    this.#setState('closed')
    for (const off of this.#off.splice(0)) off()
    if (this.#poll) clearInterval(this.#poll)
    if (this.#retry) clearTimeout(this.#retry)
    this.#forget()
    await this.#loop?.catch(() => undefined)
    if (this.group !== null && this.#leaseEpoch !== null) {
      try {
        await this.#commit()
        await this.#deps.sql`
          update ${this.#s}.reliable_topic_groups set holder = null, holder_epoch = null, holder_token = null
          where topic = ${this.topic} and grp = ${this.group} and holder_token = ${this.#token}`
        this.#leaseEpoch = null
        void this.#deps.bus.publish(this.#ref.channel, 'released').catch(() => undefined)
      } catch (err) {
        this.#log.warn({ err: toError(err) }, 'could not release the group; another instance takes it over once this one is down')
      }
    }
  }

  #setState(next: SubscriptionState): void {
    switch (next) {
      case 'starting':
      case 'standby':
      case 'active':
      case 'closed':
        break
      default: {
        const never: never = next
        throw new Error(`unknown state ${String(never)}`)
      }
    }
    this.#state = next
  }

  #wake(): void {
    if (this.#state === 'closed' || this.#state === 'starting') return
    this.#wanted = true
    if (this.#loop) return
    this.#loop = this.#run()
      .then(
        () => {
          this.#dbFailures = 0
        },
        (err: unknown) => this.#dbError(err),
      )
      .finally(() => {
        this.#loop = null
        if (this.#wanted && Date.now() >= this.#retryAt) this.#wake()
      })
  }

  async #run(): Promise<void> {
    while (this.#wanted) {
      this.#wanted = false
      if (Date.now() < this.#retryAt) {
        // Too early for the retry (a timer may fire a millisecond before Date.now() reaches it):
        // make sure something wakes this subscription when the backoff ends.
        this.#armRetry(this.#retryAt - Date.now())
        return
      }
      if (this.#state === 'standby') await this.#acquire()
      if (this.#state !== 'active') return
      const { messages, full } = await this.#read()
      const ok = await this.#deliver(messages)
      if (this.group !== null && this.#leaseEpoch !== null) await this.#commit()
      if (ok && full) this.#wanted = true
    }
  }

  /** Reads the next batch in one statement (one snapshot), so the head and the rows agree. */
  async #read(): Promise<{ messages: Row[]; full: boolean }> {
    const rows = await this.#deps.sql<Row[]>`
      select t.head, m.msg_offset, m.data, m.publisher, m.published_at
      from ${this.#s}.reliable_topics t
      left join lateral (
        select msg_offset, data, publisher, published_at from ${this.#s}.reliable_topic_messages
        where topic = t.topic and msg_offset >= ${this.#next}
        order by msg_offset limit ${this.#batch}
      ) m on true
      where t.topic = ${this.topic}`
    if (rows.length === 0) return { messages: [], full: false }
    const head = Number(rows[0]!.head)
    const messages = rows.filter((r) => r.msg_offset !== null)
    // Offsets are dense and commit-ordered: a hole before the first row was removed by retention.
    const first = messages.length > 0 ? Number(messages[0]!.msg_offset) : head + 1
    if (first > this.#next && this.#next <= head) this.#gap(this.#next, first - 1)
    return { messages, full: messages.length === this.#batch }
  }

  #gap(from: number, to: number): void {
    const gap = { from, to, missed: to - from + 1 }
    this.#next = to + 1
    this.#log.warn(gap, 'reliable topic: messages were removed by retention before this subscriber read them')
    try {
      this.#onGap?.(gap)
    } catch (err) {
      this.#log.error({ err: toError(err) }, 'reliable topic: the onGap callback failed')
    }
  }

  #armRetry(delayMs: number): void {
    if (this.#retry) clearTimeout(this.#retry)
    this.#retry = setTimeout(() => {
      this.#retry = null
      this.#wake()
    }, Math.max(1, delayMs + 1))
    this.#retry.unref()
  }

  /** Delivers in order; stops at the first failure (to retry it later) or when no longer active. */
  async #deliver(rows: Row[]): Promise<boolean> {
    for (const row of rows) {
      if (this.#state !== 'active') return false
      const offset = Number(row.msg_offset)
      if (offset < this.#next) continue
      try {
        const message = this.#ref.codec.decode(row.data!)
        await this.#handler(message, { offset, publishedAt: row.published_at!, publisher: row.publisher! })
      } catch (err) {
        this.#failures++
        const delay = Math.min(MAX_RETRY_MS, 100 * 2 ** (this.#failures - 1))
        this.#log.warn({ err: toError(err), offset, retryInMs: delay }, 'reliable topic: the handler failed; the message will be delivered again')
        this.#retryAt = Date.now() + delay
        this.#armRetry(delay)
        return false
      }
      this.#failures = 0
      this.#next = offset + 1
    }
    return true
  }

  /** Writes the group's position, fenced by the lease: a subscription that lost the lease stands by. */
  async #commit(): Promise<void> {
    const upto = this.#next - 1
    if (upto <= this.#committed || this.#leaseEpoch === null) return
    const rows = await this.#deps.sql`
      update ${this.#s}.reliable_topic_groups set committed = greatest(committed, ${upto}), committed_at = now()
      where topic = ${this.topic} and grp = ${this.group} and holder_token = ${this.#token} and holder_epoch = ${this.#leaseEpoch}
      returning 1`
    if (rows.length === 0) {
      this.#log.warn('reliable topic: the group was taken over; standing by')
      this.#leaseEpoch = null
      if (this.#state === 'active') this.#setState('standby')
      return
    }
    this.#committed = upto
  }

  /**
   * Takes the group's lease when it is free, already ours, or held by an instance that is not a
   * live member under the epoch it took the lease with; creates the group at `from` when new.
   */
  async #acquire(): Promise<void> {
    const self = this.#deps.members.self
    if (self.state !== 'up' && self.state !== 'draining') {
      if (this.#state === 'starting') this.#setState('standby')
      return
    }
    const sql = this.#deps.sql
    const initial =
      this.#from === 'latest'
        ? sql`(select coalesce(max(head), 0) from ${this.#s}.reliable_topics where topic = ${this.topic})`
        : this.#from === 'earliest'
          ? sql`coalesce((select min(msg_offset) - 1 from ${this.#s}.reliable_topic_messages where topic = ${this.topic}), (select max(head) from ${this.#s}.reliable_topics where topic = ${this.topic}), 0)`
          : sql`${this.#from - 1}::bigint`
    const rows = await sql<{ committed: string }[]>`
      insert into ${this.#s}.reliable_topic_groups as g (topic, grp, committed, holder, holder_epoch, holder_token, leased_at)
      values (${this.topic}, ${this.group}, ${initial}, ${this.#deps.instanceId}, ${self.epoch}, ${this.#token}, now())
      on conflict (topic, grp) do update set
        holder = excluded.holder, holder_epoch = excluded.holder_epoch, holder_token = excluded.holder_token, leased_at = now()
      where g.holder_token is null or g.holder_token = excluded.holder_token
         or not exists (select 1 from ${this.#s}.members m where m.instance_id = g.holder and m.epoch = g.holder_epoch and m.status <> 'down')
      returning committed`
    if (rows.length === 0) {
      if (this.#state === 'starting' || this.#state === 'active') this.#setState('standby')
      return
    }
    this.#leaseEpoch = self.epoch
    this.#committed = Number(rows[0]!.committed)
    this.#next = this.#committed + 1
    // Taken while closing: close() releases it again.
    if (this.#state !== 'closed') this.#setState('active')
  }

  async #startOffset(): Promise<number> {
    if (typeof this.#from === 'number') return this.#from
    const [row] = await this.#deps.sql<{ head: string | null; oldest: string | null }[]>`
      select (select head from ${this.#s}.reliable_topics where topic = ${this.topic}) as head,
             (select min(msg_offset) from ${this.#s}.reliable_topic_messages where topic = ${this.topic}) as oldest`
    const head = Number(row?.head ?? 0)
    if (this.#from === 'earliest' && row?.oldest != null) return Number(row.oldest)
    return head + 1
  }

  /** This instance may be declared down: stop delivering under the old epoch; the lease is fenced by it. */
  #isolated(): void {
    if (this.group !== null && this.#state === 'active') {
      this.#leaseEpoch = null
      this.#setState('standby')
    }
  }

  /** Tries again on the shared reconnect backoff, so delivery resumes as soon as the database answers. */
  #dbError(err: unknown): void {
    const delay = reconnectDelayMs(this.#dbFailures++)
    if (Date.now() - this.#lastErrorLog > 5000) {
      this.#lastErrorLog = Date.now()
      this.#log.warn({ err: toError(err), retryInMs: Math.round(delay) }, 'reliable topic: database error; retrying')
    }
    // No run before then: wake-ups meanwhile wait for the same moment.
    this.#retryAt = Math.max(this.#retryAt, Date.now() + delay)
    this.#armRetry(this.#retryAt - Date.now())
  }
}
