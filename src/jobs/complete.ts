/**
 * Recording a claimed job's outcome: completions of plain jobs of one event-loop turn are written
 * together; a failure is requeued with its backoff or kept as failed; a job claimed past its last
 * attempt gives up. Every write matches the claim id, so an outcome never lands on a job that was
 * handed back meanwhile; a write that fails is retried while this instance's epoch owns the claim
 * (nobody else runs the job meanwhile), and given up once the epoch or the worker is gone.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import { reconnectDelayMs } from '../db/backoff.js'
import type { Sql } from '../db/connect.js'
import type { SchemaName } from '../db/schema.js'
import { toError } from '../errors.js'
import type { Events } from '../events.js'
import type { Membership } from '../membership/membership.js'
import { defer, type Deferred } from '../util/deferred.js'
import { Rerun } from '../util/rerun.js'
import type { Definition } from './definition.js'
import { errorText } from './limits.js'
import type { Queue } from './queue.js'
import type { ClaimRow } from './sql/claimJobs.js'
import { completeJobs } from './sql/completeJobs.js'
import { failJob } from './sql/failJob.js'
import { giveUpJob } from './sql/giveUpJob.js'
import { requeueJob } from './sql/requeueJob.js'

/** Most completions written by one statement. */
const COMPLETION_BATCH = 1000

export interface OutcomeDeps {
  /** The queue's own connections. */
  q: Sql
  s: SchemaName
  queue: Queue
  events: Events
  log: Logger
  members: Membership
  /** The worker is closed: writes that fail are given up. */
  closed(): boolean
}

interface Completion {
  readonly id: string
  readonly claimId: string
  readonly done: Deferred<boolean>
}

export class Outcomes {
  readonly #d: OutcomeDeps
  #completions: Completion[] = []
  #flushScheduled = false
  readonly #flush: Rerun
  readonly #writes = new Set<Promise<unknown>>()

  constructor(deps: OutcomeDeps) {
    this.#d = deps
    this.#flush = new Rerun(
      () => this.#flushLoop(),
      (err) => deps.log.warn({ err: toError(err) }, 'writing completions failed'),
    )
  }

  /** Nothing is waiting to be written. */
  get idle(): boolean {
    return this.#completions.length === 0 && !this.#flush.running && this.#writes.size === 0
  }

  /** completeJobs: resolves true once written, false when the claim was lost (or the worker closed). */
  complete(id: string, claimId: string): Promise<boolean> {
    const done = defer<boolean>()
    this.#completions.push({ id, claimId, done })
    if (!this.#flushScheduled) {
      this.#flushScheduled = true
      setImmediate(() => {
        this.#flushScheduled = false
        void this.#flush.run()
      })
    }
    return done.promise
  }

  async #flushLoop(): Promise<void> {
    for (let failures = 0; this.#completions.length > 0; ) {
      const batch = this.#completions.splice(0, COMPLETION_BATCH)
      let done: Set<string>
      try {
        const rows = await completeJobs(this.#d.q, this.#d.s, { ids: batch.map((c) => c.id), claimIds: batch.map((c) => c.claimId) })
        done = new Set(rows.map((r) => r.id))
      } catch (err) {
        if (this.#d.closed()) {
          for (const c of batch) c.done.resolve(false)
          continue
        }
        // The jobs stay claimed by this live epoch, so nobody else runs them meanwhile: write again.
        this.#d.log.warn({ err: toError(err), jobs: batch.length }, 'could not record completions; retrying')
        this.#completions.unshift(...batch)
        await sleep(reconnectDelayMs(failures++))
        continue
      }
      failures = 0
      for (const c of batch) c.done.resolve(done.has(c.id))
    }
  }

  /** Waits until every completion and outcome asked for so far is written (or given up). */
  async flushAll(): Promise<void> {
    while (this.#completions.length > 0 || this.#flush.running || this.#writes.size > 0) {
      await Promise.allSettled([this.#flush.run(), ...this.#writes])
    }
  }

  /** failJob or requeueJob: the attempt failed; the job is kept as failed, or queued again after its backoff. */
  async fail(def: Definition, row: ClaimRow, error: Error): Promise<void> {
    const retry = row.attempts < def.retries + 1
    let delay = 0
    if (retry) {
      try {
        delay = Math.max(0, Math.min(2 ** 31 - 1, Number(def.backoff(row.attempts, error)) || 0))
      } catch (err) {
        this.#d.log.warn({ err: toError(err), job: def.name }, 'the backoff function threw; retrying at once')
      }
    }
    const text = errorText(error)
    const { q, s } = this.#d
    const rows = await this.#persist(() =>
      retry ? requeueJob(q, s, { id: row.id, claimId: row.claim_id, delayMs: delay, error: text }) : failJob(q, s, { id: row.id, claimId: row.claim_id, error: text }),
    )
    if (!rows) return
    if (rows.length === 0) {
      this.claimLost(row)
      return
    }
    this.#d.log.debug({ job: def.name, id: row.id, attempt: row.attempts, err: error, retryInMs: retry ? delay : null }, 'attempt failed')
    this.#d.events.emit('job:failed', { id: row.id, name: row.name, attempt: row.attempts, error: error.message, retryInMs: retry ? delay : null })
    if (retry) this.#d.queue.wake(row.name, delay)
  }

  /** giveUpJob: the last allowed attempt's claimer went down with it; the job fails without another run. */
  async giveUp(row: ClaimRow): Promise<void> {
    const rows = await this.#persist(() => giveUpJob(this.#d.q, this.#d.s, { id: row.id, claimId: row.claim_id }))
    const lastError = rows?.[0]?.last_error ?? 'its claimer went down'
    if (rows && rows.length > 0) this.#d.events.emit('job:failed', { id: row.id, name: row.name, attempt: row.attempts - 1, error: lastError, retryInMs: null })
  }

  /** The job was handed back or cancelled before its outcome was written here. */
  claimLost(row: ClaimRow): void {
    this.#d.log.warn({ job: row.name, id: row.id, attempt: row.attempts }, 'the claim was lost before completion (handed back or cancelled); nothing was recorded')
    this.#d.events.emit('job:claim:lost', { id: row.id, name: row.name, attempt: row.attempts })
  }

  /** Runs a write that must happen, retrying while this instance still owns the claim; null if it gave up. */
  #persist<T>(fn: () => Promise<T>): Promise<T | null> {
    const epoch = this.#d.members.self.epoch
    const p = (async () => {
      for (let attempt = 0; ; attempt++) {
        try {
          return await fn()
        } catch (err) {
          if (this.#d.closed() || this.#d.members.self.epoch !== epoch) return null
          this.#d.log.warn({ err: toError(err) }, 'could not record a job outcome; retrying')
          await sleep(reconnectDelayMs(attempt))
        }
      }
    })()
    this.#writes.add(p)
    void p.finally(() => this.#writes.delete(p))
    return p
  }
}
