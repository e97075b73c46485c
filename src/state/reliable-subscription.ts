/**
 * One subscriber of a reliable topic: the delivery loop. It reads the log in offset order and hands
 * each message to its handler, one at a time. With a group, only the holder of the group's claim
 * delivers, and its position is committed after each batch under that claim (reliable-group.ts);
 * other subscriptions of the group stand by and take the claim over once its holder is no longer
 * live. Wake-ups come from the bus; a slow safety poll covers lost ones. No busy polling.
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
import { parseCallOptions } from '../util/call-options.js'
import { Machine } from '../util/machine.js'
import { Rerun } from '../util/rerun.js'
import { checkName, type Codec } from './codec.js'
import { subscribeOptions, type ReliableGap, type ReliableSubscribeOptions } from './options.js'
import { GroupClaim, startOffset, type StartFrom } from './reliable-group.js'

export type { ReliableGap, ReliableSubscribeOptions } from './options.js'

/**
 * States of a subscription, each with the states it may be entered from:
 * - `starting`: finding its position (and trying to claim its group).
 * - `standby`: a group subscription whose claim another live instance holds; waits to take it over.
 * - `active`: delivering.
 * - `closed`: done; the group's claim (if held) was released.
 */
export const enteredFrom = {
  starting: [],
  standby: ['starting', 'active'],
  active: ['starting', 'standby'],
  closed: ['starting', 'standby', 'active'],
} as const

export type SubscriptionState = keyof typeof enteredFrom

/** A subscription's state machine (exported so its transitions can be shown without a database). */
export function subscriptionMachine(): Machine<SubscriptionState> {
  return new Machine<SubscriptionState>('reliable subscription', enteredFrom, 'starting')
}

export interface ReliableMessageMeta {
  readonly offset: number
  readonly publishedAt: Date
  /** Instance id of the publisher. */
  readonly publisher: string
}

export type ReliableHandler<T> = (message: T, meta: ReliableMessageMeta) => unknown

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

const MAX_RETRY_MS = 5000

export class ReliableSubscription<T> {
  readonly topic: string
  readonly group: string | null
  readonly #ref: TopicRef<T>
  readonly #handler: ReliableHandler<T>
  readonly #deps: ReliableTopicDeps
  readonly #s: SchemaName
  readonly #from: StartFrom
  readonly #onGap: ((gap: ReliableGap) => void) | undefined
  readonly #batch: number
  readonly #pollMs: number
  readonly #claim: GroupClaim | null
  readonly #forget: () => void
  readonly #log: Logger
  readonly #machine = subscriptionMachine()
  /** One delivery run at a time; a wake-up during a run asks for one more. */
  readonly #runs: Rerun
  /** The next offset to deliver. */
  #next = 1
  /** Group: the offset last written as committed. */
  #committed = 0
  /** Group: the epoch under which this subscription holds the claim, or null. */
  #claimEpoch: number | null = null
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
    if (typeof handler !== 'function') throw optionInvalid('handler', 'must be a function')
    const o = parseCallOptions(subscribeOptions, opts, (option, why) => {
      if (option !== 'from') return optionInvalid(option, why)
      const from = (opts as { from?: unknown }).from
      return new ChorusError('CHORUS_ERR_STATE_OFFSET_INVALID', [ref.name, JSON.stringify(from)], { details: { from } })
    })
    if (o.group !== undefined) checkName('group', o.group)
    this.topic = ref.name
    this.group = o.group ?? null
    this.#ref = ref
    this.#handler = handler
    this.#deps = deps
    this.#s = schemaName(deps.sql, deps.schema ?? 'chorus')
    this.#from = o.from ?? 'latest'
    this.#onGap = o.onGap
    this.#batch = o.batchSize ?? 100
    this.#pollMs = o.pollMs ?? 2000
    this.#forget = forget
    this.#log = deps.log.child({ subsystem: 'reliable-topic', topic: ref.name, group: this.group })
    this.#claim =
      this.group === null
        ? null
        : new GroupClaim({ sql: deps.sql, s: this.#s, topic: ref.name, group: this.group, token: randomBytes(9).toString('base64url'), instanceId: deps.instanceId })
    this.#runs = new Rerun(
      () =>
        this.#run().then(() => {
          this.#dbFailures = 0
        }),
      (err) => this.#dbError(err),
    )
  }

  get state(): SubscriptionState {
    return this.#machine.state
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
        if (this.#machine.is('standby') || (this.#machine.is('active') && Number(data) >= this.#next)) this.#wake()
      }),
      d.events.on('bus:gap', () => this.#wake()),
      d.events.on('member:down', () => {
        if (this.#machine.is('standby')) this.#wake()
      }),
      d.events.on('member:self:isolated', () => this.#isolated()),
      d.events.on('member:self:rejoined', () => this.#wake()),
    )
    if (this.#claim === null) {
      this.#next = await startOffset(d.sql, this.#s, this.topic, this.#from)
      // Closed meanwhile: nothing to start.
      if (!this.#machine.is('closed')) this.#machine.to('active')
    } else {
      await this.#take()
    }
    if (this.#machine.is('closed')) return
    this.#poll = setInterval(() => this.#wake(), this.#pollMs)
    this.#poll.unref()
    this.#wake()
  }

  /**
   * Stops delivering (a handler running now finishes first), commits the group's position and
   * releases its claim so a standby elsewhere takes over at once.
   */
  async close(): Promise<void> {
    if (this.#machine.is('closed')) return
    this.#machine.to('closed')
    for (const off of this.#off.splice(0)) off()
    if (this.#poll) clearInterval(this.#poll)
    if (this.#retry) clearTimeout(this.#retry)
    this.#forget()
    // The run under way finishes first; the one queued behind it sees the subscription closed.
    if (this.#runs.running) await this.#runs.run()
    if (this.#claim !== null && this.#claimEpoch !== null) {
      try {
        await this.#commit()
        await this.#claim.release()
        this.#claimEpoch = null
        this.#deps.bus.notify(this.#ref.channel, 'released')
      } catch (err) {
        this.#log.warn({ err: toError(err) }, 'could not release the group; another instance takes it over once this one is down')
      }
    }
  }

  #wake(): void {
    if (this.#machine.is('closed', 'starting')) return
    void this.#runs.run()
  }

  /** One run: claim the group when standing by, then read and deliver a batch and commit it. */
  async #run(): Promise<void> {
    if (this.#machine.is('closed', 'starting')) return
    if (Date.now() < this.#retryAt) {
      // Too early for the retry (a timer may fire a millisecond before Date.now() reaches it):
      // make sure something wakes this subscription when the backoff ends.
      this.#armRetry(this.#retryAt - Date.now())
      return
    }
    if (this.#machine.is('standby')) await this.#take()
    if (!this.#machine.is('active')) return
    const { messages, full } = await this.#read()
    const ok = await this.#deliver(messages)
    if (this.#claim !== null && this.#claimEpoch !== null) await this.#commit()
    // A full batch: more may be waiting.
    if (ok && full) this.#wake()
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
    this.#log.warn(gap, 'messages were removed by retention before this subscriber read them')
    try {
      this.#onGap?.(gap)
    } catch (err) {
      this.#log.error({ err: toError(err) }, 'the onGap callback failed')
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
      if (!this.#machine.is('active')) return false
      const offset = Number(row.msg_offset)
      if (offset < this.#next) continue
      try {
        const message = this.#ref.codec.decode(row.data!)
        await this.#handler(message, { offset, publishedAt: row.published_at!, publisher: row.publisher! })
      } catch (err) {
        this.#failures++
        const delay = Math.min(MAX_RETRY_MS, 100 * 2 ** (this.#failures - 1))
        this.#log.warn({ err: toError(err), offset, retryInMs: delay }, 'the handler failed; the message will be delivered again')
        this.#retryAt = Date.now() + delay
        this.#armRetry(delay)
        return false
      }
      this.#failures = 0
      this.#next = offset + 1
    }
    return true
  }

  /** Writes the group's position under the claim: a subscription whose claim was taken over stands by. */
  async #commit(): Promise<void> {
    const upto = this.#next - 1
    if (upto <= this.#committed || this.#claimEpoch === null || this.#claim === null) return
    if (!(await this.#claim.commit(upto, this.#claimEpoch))) {
      this.#log.warn('the group was taken over; standing by')
      this.#claimEpoch = null
      if (this.#machine.is('active')) this.#machine.to('standby')
      return
    }
    this.#committed = upto
  }

  /** Claims the group when this instance is a member; delivers from after its committed offset. */
  async #take(): Promise<void> {
    const self = this.#deps.members.self
    if (self.state !== 'up' && self.state !== 'draining') {
      if (this.#machine.is('starting')) this.#machine.to('standby')
      return
    }
    const committed = await this.#claim!.take(self.epoch, this.#from)
    if (committed === null) {
      if (this.#machine.is('starting', 'active')) this.#machine.to('standby')
      return
    }
    this.#claimEpoch = self.epoch
    this.#committed = committed
    this.#next = committed + 1
    // Taken while closing: close() releases it again.
    if (!this.#machine.is('closed')) this.#machine.to('active')
  }

  /** This instance may be declared down: stop delivering under the old epoch; the claim is fenced by it. */
  #isolated(): void {
    if (this.#claim !== null && this.#machine.is('active')) {
      this.#claimEpoch = null
      this.#machine.to('standby')
    }
  }

  /** Tries again on the shared reconnect backoff, so delivery resumes as soon as the database answers. */
  #dbError(err: unknown): void {
    const delay = reconnectDelayMs(this.#dbFailures++)
    if (Date.now() - this.#lastErrorLog > 5000) {
      this.#lastErrorLog = Date.now()
      this.#log.warn({ err: toError(err), retryInMs: Math.round(delay) }, 'database error; retrying')
    }
    // No run before then: wake-ups meanwhile wait for the same moment.
    this.#retryAt = Math.max(this.#retryAt, Date.now() + delay)
    this.#armRetry(this.#retryAt - Date.now())
  }
}

function optionInvalid(option: string, why: string): ChorusError {
  return new ChorusError('CHORUS_ERR_OPTIONS_INVALID', [option, why], { details: { option } })
}
