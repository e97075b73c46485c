/**
 * Reliable topics: a durable, ordered log per topic in PostgreSQL. `publish` bumps the topic's head
 * row and inserts the message in one transaction, so offsets are dense and become visible in offset
 * order (the head row's lock orders the commits) — a reader of "offset ≥ n" can never skip a message
 * that commits later. Subscribers are woken through the bus after each commit, with a slow safety
 * poll for lost wake-ups; retention (age, count) removes a prefix of the log, swept cluster-wide.
 */
import { channels } from '../bus/channels.js'
import type { Sql } from '../db/connect.js'
import { schemaName, type SchemaName } from '../db/schema.js'
import { ChorusError } from '../errors.js'
import { parseOptions } from '../util/parse-options.js'
import { checkName, encodeChecked, json, type Codec } from './codec.js'
import { reliableTopicOptions, type ReliableTopicOptions } from './options.js'
import { ReliableSubscription, type ReliableHandler, type ReliableSubscribeOptions, type ReliableTopicDeps } from './reliable-subscription.js'

export type { ReliableTopicDeps }
export type { ReliableTopicOptions, ReliableTopicRetention } from './options.js'

const DAY_MS = 24 * 60 * 60 * 1000

export class ReliableTopic<T = unknown> {
  readonly name: string
  readonly #deps: ReliableTopicDeps
  readonly #s: SchemaName
  readonly #codec: Codec<T>
  readonly #limit: number
  readonly #maxAgeMs: number | null
  readonly #maxCount: number | null
  readonly #channel: string
  readonly #subscriptions = new Set<ReliableSubscription<T>>()
  #closed = false

  constructor(name: string, opts: ReliableTopicOptions<T>, deps: ReliableTopicDeps) {
    checkName('reliable topic', name)
    this.name = name
    this.#deps = deps
    this.#s = schemaName(deps.sql, deps.schema ?? 'chorus')
    const o = parseOptions(reliableTopicOptions, opts)
    this.#codec = (o.codec as Codec<T> | undefined) ?? (json as Codec<T>)
    this.#limit = o.maxMessageBytes ?? 256 * 1024
    const r = o.retention ?? {}
    this.#maxAgeMs = r.maxAgeMs === null ? null : (r.maxAgeMs ?? DAY_MS)
    this.#maxCount = r.maxCount === null ? null : (r.maxCount ?? 100_000)
    this.#channel = channels.reliableTopic(name)
  }

  /** Appends the message to the log and resolves with its offset (1, 2, 3, … per topic) once committed. */
  async publish(message: T): Promise<number> {
    this.#assertOpen('publish')
    const text = encodeChecked(this.#codec, message, this.#limit)
    const [row] = await this.#deps.sql<{ msg_offset: string }[]>`
      with head as (
        insert into ${this.#s}.reliable_topics as t (topic, head, max_age_ms, max_count)
        values (${this.name}, 1, ${this.#maxAgeMs}, ${this.#maxCount})
        on conflict (topic) do update set head = t.head + 1, max_age_ms = excluded.max_age_ms, max_count = excluded.max_count
        returning head
      )
      insert into ${this.#s}.reliable_topic_messages (topic, msg_offset, data, publisher)
      select ${this.name}, head, ${text}, ${this.#deps.instanceId} from head
      returning msg_offset`
    const offset = Number(row!.msg_offset)
    // A lost wake-up only delays delivery until the subscribers' safety poll.
    this.#deps.bus.notify(this.#channel, String(offset))
    return offset
  }

  /**
   * Delivers messages in offset order to `handler`, one at a time (the next waits for the previous
   * handler's promise). Without a group the position lives in this process and starts at `from`
   * (default `'latest'`: messages published from now on). With a `group`, the position is the group's
   * committed offset in the database: a group seen for the first time starts at `from`, an existing
   * one resumes after its committed offset, and only one subscription per group in the whole cluster
   * delivers at a time (the others stand by and take over when its instance is no longer live).
   * Delivery is at-least-once: see docs/state.md.
   */
  async subscribe(handler: ReliableHandler<T>, opts: ReliableSubscribeOptions = {}): Promise<ReliableSubscription<T>> {
    this.#assertOpen('subscribe')
    const sub = new ReliableSubscription<T>(
      { name: this.name, channel: this.#channel, codec: this.#codec },
      handler,
      opts,
      this.#deps,
      () => this.#subscriptions.delete(sub),
    )
    this.#subscriptions.add(sub)
    try {
      await sub.start()
    } catch (err) {
      await sub.close().catch(() => undefined)
      throw err
    }
    return sub
  }

  /** The last offset published (0 when none). */
  async head(): Promise<number> {
    const [row] = await this.#deps.sql<{ head: string }[]>`select head from ${this.#s}.reliable_topics where topic = ${this.name}`
    return row ? Number(row.head) : 0
  }

  /** The oldest offset still retained, or null when the log is empty. */
  async oldest(): Promise<number | null> {
    const [row] = await this.#deps.sql<{ o: string | null }[]>`select min(msg_offset) as o from ${this.#s}.reliable_topic_messages where topic = ${this.name}`
    return row?.o == null ? null : Number(row.o)
  }

  /** The group's committed offset (the last message it handled), or null for an unknown group. */
  async committed(group: string): Promise<number | null> {
    checkName('group', group)
    const [row] = await this.#deps.sql<{ committed: string }[]>`
      select committed from ${this.#s}.reliable_topic_groups where topic = ${this.name} and grp = ${group}`
    return row ? Number(row.committed) : null
  }

  /** Closes this instance's subscriptions to the topic (committing and releasing their groups). */
  async close(): Promise<void> {
    this.#closed = true
    await Promise.all([...this.#subscriptions].map((s) => s.close()))
  }

  #assertOpen(what: string): void {
    if (this.#closed) throw new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', ['closing', `${what} on reliable topic "${this.name}"`])
  }
}

/**
 * Applies every topic's retention: removes, per topic, the messages at or below the larger of
 * `head - maxCount` and the newest offset older than `maxAgeMs` — always a prefix of the log, so
 * retained offsets stay contiguous. Returns how many messages were removed. Run cluster-wide by one
 * instance at a time (the state sweep cron).
 */
export async function sweepReliableTopics(sql: Sql, schema = 'chorus'): Promise<number> {
  const s = schemaName(sql, schema)
  const [row] = await sql<{ n: number }[]>`
    with cut as (
      select t.topic, greatest(
        case when t.max_count is null then 0 else t.head - t.max_count end,
        case when t.max_age_ms is null then 0 else coalesce((
          select max(m.msg_offset) from ${s}.reliable_topic_messages m
          where m.topic = t.topic and m.published_at < now() - t.max_age_ms * interval '1 millisecond'), 0) end
      ) as upto
      from ${s}.reliable_topics t
    ), removed as (
      delete from ${s}.reliable_topic_messages m using cut
      where m.topic = cut.topic and m.msg_offset <= cut.upto
      returning 1
    )
    select count(*)::int as n from removed`
  return row?.n ?? 0
}
