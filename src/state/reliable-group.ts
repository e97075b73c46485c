/**
 * Where a reliable-topic subscription reads from. Without a group: its starting offset, in this
 * process only. With a group: the group's row in the database, claimed by one subscription of the
 * cluster at a time — the claim (holder, epoch, token) is taken when free, already this
 * subscription's, or held by an instance that membership's view no longer counts as live under
 * the epoch it claimed with — and the committed offset, written only under the claim.
 */
import type { Sql } from '../db/connect.js'
import type { SchemaName } from '../db/schema.js'
import { isLive } from '../membership/live.js'

export type StartFrom = 'latest' | 'earliest' | number

/** The offset a subscription without a group starts at. */
export async function startOffset(sql: Sql, s: SchemaName, topic: string, from: StartFrom): Promise<number> {
  if (typeof from === 'number') return from
  const [row] = await sql<{ head: string | null; oldest: string | null }[]>`
    select (select head from ${s}.reliable_topics where topic = ${topic}) as head,
           (select min(msg_offset) from ${s}.reliable_topic_messages where topic = ${topic}) as oldest`
  const head = Number(row?.head ?? 0)
  if (from === 'earliest' && row?.oldest != null) return Number(row.oldest)
  return head + 1
}

/** One subscription's claim on its group. */
export class GroupClaim {
  readonly #sql: Sql
  readonly #s: SchemaName
  readonly #topic: string
  readonly #group: string
  /** Names this subscription as the holder (an instance may run several subscriptions of a group). */
  readonly #token: string
  readonly #instanceId: string

  constructor(p: { sql: Sql; s: SchemaName; topic: string; group: string; token: string; instanceId: string }) {
    this.#sql = p.sql
    this.#s = p.s
    this.#topic = p.topic
    this.#group = p.group
    this.#token = p.token
    this.#instanceId = p.instanceId
  }

  /**
   * Claims the group under `epoch`, creating it at `from` when new. Resolves with the group's
   * committed offset, or `null` while another live subscription holds it.
   */
  async take(epoch: number, from: StartFrom): Promise<number | null> {
    const sql = this.#sql
    const s = this.#s
    const initial =
      from === 'latest'
        ? sql`(select coalesce(max(head), 0) from ${s}.reliable_topics where topic = ${this.#topic})`
        : from === 'earliest'
          ? sql`coalesce((select min(msg_offset) - 1 from ${s}.reliable_topic_messages where topic = ${this.#topic}), (select max(head) from ${s}.reliable_topics where topic = ${this.#topic}), 0)`
          : sql`${from - 1}::bigint`
    const rows = await sql<{ committed: string }[]>`
      insert into ${s}.reliable_topic_groups as g (topic, grp, committed, holder, holder_epoch, holder_token, leased_at)
      values (${this.#topic}, ${this.#group}, ${initial}, ${this.#instanceId}, ${epoch}, ${this.#token}, now())
      on conflict (topic, grp) do update set
        holder = excluded.holder, holder_epoch = excluded.holder_epoch, holder_token = excluded.holder_token, leased_at = now()
      where g.holder_token is null or g.holder_token = excluded.holder_token
         or not ${isLive(sql, s, sql`g.holder`, sql`g.holder_epoch`)}
      returning committed`
    return rows.length === 0 ? null : Number(rows[0]!.committed)
  }

  /** Writes the committed offset under the claim taken at `epoch`; `false` when the claim was taken over. */
  async commit(upto: number, epoch: number): Promise<boolean> {
    const rows = await this.#sql`
      update ${this.#s}.reliable_topic_groups set committed = greatest(committed, ${upto}), committed_at = now()
      where topic = ${this.#topic} and grp = ${this.#group} and holder_token = ${this.#token} and holder_epoch = ${epoch}
      returning 1`
    return rows.length > 0
  }

  /** Gives the claim up, so a standby elsewhere can take it at once. */
  async release(): Promise<void> {
    await this.#sql`
      update ${this.#s}.reliable_topic_groups set holder = null, holder_epoch = null, holder_token = null
      where topic = ${this.#topic} and grp = ${this.#group} and holder_token = ${this.#token}`
  }
}
