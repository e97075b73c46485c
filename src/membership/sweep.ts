/**
 * The expiry sweep every live instance runs on each read of the table: members whose lease ran out
 * are declared down — unless too many expired at once (self-preservation, see `declarable`), when
 * only those silent for one further lease are, and the burst is reported once.
 */
import type { Logger } from 'pino'
import type { Sql } from '../db/connect.js'
import type { SchemaName } from '../db/schema.js'
import type { Events } from '../events.js'
import { declarable, type WatchedMember } from './rows.js'
import { markExpiredDown } from './writes.js'

export class ExpirySweep {
  readonly #selfId: string
  readonly #burstRatio: number
  readonly #events: Events
  readonly #log: Logger
  #burstLogged = false

  constructor(deps: { selfId: string; burstRatio: number; events: Events; log: Logger }) {
    this.#selfId = deps.selfId
    this.#burstRatio = deps.burstRatio
    this.#events = deps.events
    this.#log = deps.log
  }

  /**
   * Declares the expired members among `rows` down (when `mayDecide`: this instance is a member);
   * returns the rows as they are now, and the ids it marked down.
   */
  async run(sql: Sql, s: SchemaName, rows: WatchedMember[], mayDecide: boolean): Promise<{ rows: WatchedMember[]; marked: string[] }> {
    const live = rows.filter((r) => r.status !== 'down')
    const expired = live.filter((r) => r.expired && r.instanceId !== this.#selfId)
    if (expired.length === 0) this.#burstLogged = false
    if (expired.length === 0 || !mayDecide) return { rows, marked: [] }
    const others = live.length - 1
    const { victims, burst } = declarable(expired, others, this.#burstRatio)
    if (!burst) this.#burstLogged = false
    else if (!this.#burstLogged) {
      this.#burstLogged = true
      const ids = expired.map((r) => r.instanceId)
      this.#log.error(
        { expired: ids, live: live.length },
        `SELF-PRESERVATION: ${ids.length} of ${others} other members expired at once; waiting one more failAfter before declaring them down`,
      )
      this.#events.emit('member:burst:suspected', { expired: ids, live: live.length })
    }
    if (victims.length === 0) return { rows, marked: [] }
    const marked = await markExpiredDown(sql, s, victims.map((v) => v.instanceId), 'any')
    if (marked.length === 0) return { rows, marked }
    this.#log.warn({ down: marked }, 'declared expired members down')
    const downIds = new Set(marked)
    return { rows: rows.map((r) => (downIds.has(r.instanceId) ? { ...r, status: 'down', downReason: 'expired' } : r)), marked }
  }
}
