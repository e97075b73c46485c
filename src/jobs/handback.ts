/**
 * Giving claims back to the queue: the jobs of a member declared down (their attempts count), this
 * instance's own claims it will not run (drain, a claim that came too late, an orphan: the attempt
 * does not count), and the sweep of finished jobs past their retention. Every hand-back announces
 * the names it requeued, so workers everywhere, this one included, claim them at once.
 */
import type { Logger } from 'pino'
import type { Sql } from '../db/connect.js'
import type { SchemaName } from '../db/schema.js'
import { toError } from '../errors.js'
import type { Events } from '../events.js'
import { KEEP_FINISHED_MS } from './limits.js'
import type { Queue } from './queue.js'
import { handBackJobs } from './sql/handBackJobs.js'
import { requeueMemberJobs } from './sql/requeueMemberJobs.js'
import { sweepJobs } from './sql/sweepJobs.js'

export interface HandBackDeps {
  /** The queue's own connections. */
  q: Sql
  s: SchemaName
  queue: Queue
  events: Events
  log: Logger
  instanceId: string
}

export type RequeueReason = 'member-down' | 'claim-expired' | 'drain'

export class HandBack {
  readonly #d: HandBackDeps

  constructor(deps: HandBackDeps) {
    this.#d = deps
  }

  /** requeueMemberJobs: the jobs of a member declared down go back at once. False when that failed (the claim fallback hands them back later). */
  async member(instanceId: string, epoch: number): Promise<boolean> {
    try {
      const rows = await requeueMemberJobs(this.#d.q, this.#d.s, { instanceId, epoch })
      if (rows.length > 0) this.requeued(rows, 'member-down', instanceId)
      return true
    } catch (err) {
      this.#d.log.warn({ err: toError(err), member: instanceId }, 'could not hand back the jobs of a member that went down')
      return false
    }
  }

  /** handBackJobs: gives this instance's claims back without counting the attempt (drain, or a claim that arrived too late). */
  async claims(claimIds: string[], epoch: number): Promise<void> {
    try {
      const rows = await handBackJobs(this.#d.q, this.#d.s, { claimIds, instanceId: this.#d.instanceId, epoch })
      if (rows.length > 0) this.requeued(rows, 'drain', this.#d.instanceId)
    } catch (err) {
      this.#d.log.warn({ err: toError(err), jobs: claimIds.length }, 'could not hand claims back; peers will when this instance leaves')
    }
  }

  /** Announces requeued jobs: an event, and a wake-up for their names to every worker. */
  requeued(rows: { id: string; name: string }[], reason: RequeueReason, from: string | null): void {
    this.#d.log.info({ jobs: rows.length, reason, from }, 'claims handed back to the queue')
    this.#d.events.emit('job:requeued', { ids: rows.map((r) => r.id), reason, from })
    // To every worker, this one included.
    this.#d.queue.publishWakes([...new Set(rows.map((r) => r.name))].map((n) => `w ${n} 0`))
  }

  /** sweepJobs: deletes completed and cancelled jobs past the retention (and so frees their dedupe keys). */
  async sweep(): Promise<void> {
    try {
      await sweepJobs(this.#d.q, this.#d.s, KEEP_FINISHED_MS)
    } catch (err) {
      this.#d.log.debug({ err: toError(err) }, 'sweep failed')
    }
  }
}
