/**
 * Fan-out on one instance: which local subscriptions each message goes to, and resume. Every
 * message the log delivers (in id order) is sent to every subscription of its topic or user queue
 * here, its frame encoded once; a subscription that names the last id it saw (`chorus-last-id`) first
 * gets what it missed from the log, in order and without duplicates, or an explicit gap notice
 * (`retention`, `too-many`, `unknown-id`, `replay-failed`; `lost` when the log could not fill a hole).
 */
import type { Logger } from 'pino'
import { toError } from '../errors.js'
import type { LogMessage, MessageLog } from './log.js'
import { MessageFrames, routeKey, type Subscription } from './subscription.js'

/** The counters fan-out keeps (shared with the gateway's `stats`). */
export interface FanOutStats {
  delivered: number
  gaps: number
}

export class FanOut {
  readonly #log: Pick<MessageLog, 'next' | 'head' | 'replay'>
  readonly #logger: Logger
  readonly #stats: FanOutStats
  readonly #routes = new Map<string, Set<Subscription>>()

  constructor(log: Pick<MessageLog, 'next' | 'head' | 'replay'>, logger: Logger, stats: FanOutStats) {
    this.#log = log
    this.#logger = logger
    this.#stats = stats
  }

  /** Sends `m` to every local subscription of its destination (held back by those replaying). */
  deliver(m: LogMessage): void {
    const subs = this.#routes.get(routeKey(m.destination, m.user))
    if (!subs) return
    const frames = new MessageFrames(m)
    for (const sub of subs) {
      this.#stats.delivered++
      sub.deliver(m, frames)
    }
  }

  /** Messages `from`…`to` could not be read back: every subscription here is told it may have missed some. */
  lost(from: number, to: number): void {
    this.#stats.gaps++
    this.#logger.warn({ from, to }, 'messages could not be read back; sending gap notices')
    for (const subs of this.#routes.values()) for (const sub of subs) sub.gap('lost')
  }

  /** Routes live messages to `sub`, after replaying what it missed since `lastId` when it names one. */
  async subscribe(sub: Subscription, lastId: string | undefined): Promise<void> {
    let set = this.#routes.get(sub.key)
    if (!set) this.#routes.set(sub.key, (set = new Set()))
    set.add(sub)
    if (lastId === undefined) return
    const after = /^\d{1,15}$/.test(lastId) ? Number(lastId) : NaN
    if (!Number.isSafeInteger(after)) {
      sub.gap('unknown-id')
      return
    }
    if (after >= this.#log.next) {
      // Seen elsewhere but not yet here: skip up to it; an id no instance ever issued is a gap.
      if (after <= (await this.#log.head())) sub.lastSent = after
      else sub.gap('unknown-id')
      return
    }
    sub.beginReplay()
    try {
      const { messages, complete, swept } = await this.#log.replay(sub.destination, sub.user, after, sub.connection.limits.maxReplay)
      if (swept || !complete) {
        this.#stats.gaps++
        sub.lastSent = Math.max(sub.lastSent, after)
        sub.gap(swept ? 'retention' : 'too-many')
      } else {
        sub.lastSent = Math.max(sub.lastSent, after)
        for (const m of messages) sub.send(m)
      }
    } catch (err) {
      this.#logger.warn({ err: toError(err) }, 'replay failed')
      sub.gap('replay-failed')
    } finally {
      sub.endReplay()
    }
  }

  unsubscribe(sub: Subscription): void {
    const set = this.#routes.get(sub.key)
    set?.delete(sub)
    if (set?.size === 0) this.#routes.delete(sub.key)
  }
}
