/**
 * Running claimed jobs: each under its own signal, which aborts on timeout, cancellation, this
 * instance's isolation or the end of a drain's grace. A plain job's slot frees as soon as its
 * handler returns (its completion is written in the next batch); a `transactional` job's handler
 * runs in the transaction that also completes it (completeJob), so its writes commit with the
 * completion or not at all.
 */
import { performance } from 'node:perf_hooks'
import type { Sql } from '../db/connect.js'
import type { SchemaName } from '../db/schema.js'
import { ChorusError, isChorusError, toError } from '../errors.js'
import type { Events } from '../events.js'
import type { Membership } from '../membership/membership.js'
import { untilAborted } from '../util/abort.js'
import { defer, type Deferred } from '../util/deferred.js'
import type { Outcomes } from './complete.js'
import { recordDuration, type Definition } from './definition.js'
import type { ClaimRow } from './sql/claimJobs.js'
import { completeJob } from './sql/completeJob.js'
import type { JobContext, JobInfo, JobSql } from './types.js'

export interface RunnerDeps {
  /** The work pool: transactional handlers run in transactions of it. */
  sql: Sql
  s: SchemaName
  events: Events
  members: Membership
  outcomes: Outcomes
  /** The worker may start jobs (it is not draining or closed). */
  running(): boolean
  /** A slot of `def` freed while it has a backlog: claim more. */
  claimMore(): void
}

interface Run {
  readonly id: string
  readonly controller: AbortController
}

export class Runner {
  readonly #d: RunnerDeps
  /** By claim id. */
  readonly #runs = new Map<string, Run>()
  #idle: Deferred<void> | null = null

  constructor(deps: RunnerDeps) {
    this.#d = deps
  }

  get size(): number {
    return this.#runs.size
  }

  has(claimId: string): boolean {
    return this.#runs.has(claimId)
  }

  /** The claim ids of the jobs running now. */
  claimIds(): string[] {
    return [...this.#runs.keys()]
  }

  /** Resolves once nothing runs. */
  idle(): Promise<void> {
    if (this.#runs.size === 0) return Promise.resolve()
    this.#idle ??= defer()
    return this.#idle.promise
  }

  /** Aborts every running handler with `reason`. */
  abortAll(reason: unknown): void {
    for (const r of this.#runs.values()) r.controller.abort(reason)
  }

  /** Aborts the handler of job `id`, if it runs here. */
  abort(id: string, reason: unknown): void {
    for (const r of this.#runs.values()) if (r.id === id) r.controller.abort(reason)
  }

  /** Starts buffered jobs of `def` while it has free slots. */
  dispatch(def: Definition): void {
    while (def.running < def.concurrency && def.buffer.length > 0) {
      const { row, epoch } = def.buffer.shift()!
      if (this.#d.members.self.epoch !== epoch || !this.#d.running()) continue
      void this.#execute(def, row, epoch)
    }
  }

  async #execute(def: Definition, row: ClaimRow, epoch: number): Promise<void> {
    const { events, members, outcomes } = this.#d
    def.running++
    const controller = new AbortController()
    this.#runs.set(row.claim_id, { id: row.id, controller })
    if (members.signal.aborted) controller.abort(members.signal.reason)
    const maxAttempts = def.retries + 1
    const job: JobInfo = Object.freeze({
      id: row.id,
      name: row.name,
      attempt: row.attempts,
      maxAttempts,
      key: row.key,
      priority: row.priority,
      runAt: row.run_at,
      createdAt: row.created_at,
    })
    const started = performance.now()
    let timer: NodeJS.Timeout | null = null
    let released = false
    /** Frees the slot: a plain job's slot is free once its handler returned, before the completion is written. */
    const release = () => {
      if (released) return
      released = true
      if (timer) clearTimeout(timer)
      this.#runs.delete(row.claim_id)
      if (this.#runs.size === 0 && this.#idle) {
        this.#idle.resolve()
        this.#idle = null
      }
      def.running--
      recordDuration(def, performance.now() - started)
      this.dispatch(def)
      if (def.backlog) this.#d.claimMore()
    }
    try {
      if (row.attempts > maxAttempts) {
        // The last allowed attempt's claimer went down with it: the job fails without another run.
        await outcomes.giveUp(row)
        return
      }
      events.emit('job:started', { id: row.id, name: row.name, attempt: row.attempts })
      timer = setTimeout(() => controller.abort(new ChorusError('CHORUS_ERR_JOB_TIMEOUT', [row.name, row.id, def.timeoutMs])), def.timeoutMs)
      const { signal } = controller
      if (def.transactional) {
        const tx = this.#d.sql.begin(async (sql) => {
          // Aborted while BEGIN waited (isolated by a partition, timed out): the claim may be a peer's by now; never start.
          signal.throwIfAborted()
          const handlerSql = guardTransaction(sql, signal)
          const ctx: JobContext = { signal, job, attempt: row.attempts, sql: handlerSql.sql }
          try {
            await untilAborted(Promise.resolve().then(() => def.handler(row.payload, ctx)), signal)
          } finally {
            handlerSql.end()
          }
          if (!(await completeJob(sql, this.#d.s, { id: row.id, claimId: row.claim_id, epoch }))) throw new ChorusError('CHORUS_ERR_JOB_CLAIM_LOST', [row.name, row.id])
        })
        // The transaction rolls back by itself when the handler is aborted; do not wait for it.
        await untilAborted(tx, signal)
      } else {
        const ctx: JobContext = { signal, job, attempt: row.attempts }
        await untilAborted(Promise.resolve().then(() => def.handler(row.payload, ctx)), signal)
        release()
        if (!(await outcomes.complete(row.id, row.claim_id))) {
          outcomes.claimLost(row)
          return
        }
      }
      events.emit('job:completed', { id: row.id, name: row.name, attempt: row.attempts, durationMs: performance.now() - started })
    } catch (err) {
      const cause = controller.signal.aborted ? controller.signal.reason : err
      if (isChorusError(cause, 'CHORUS_ERR_JOB_CLAIM_LOST')) outcomes.claimLost(row)
      else if (isChorusError(cause, 'CHORUS_ERR_MEMBERSHIP_ISOLATED') || isChorusError(cause, 'CHORUS_ERR_CLUSTER_CLOSED')) {
        // Isolated: peers hand the claim back. Draining: drain() hands it back.
      } else if (isChorusError(cause, 'CHORUS_ERR_JOB_CANCELLED')) {
        // Already marked cancelled by cancel().
      } else {
        await outcomes.fail(def, row, toError(cause))
      }
    } finally {
      release()
    }
  }
}

/**
 * The transaction a transactional handler gets as `ctx.sql`, refusing every statement once the
 * handler's turn is over: its signal aborted (timeout, cancel, isolation) or it returned. The driver
 * would otherwise run a late statement on the connection after the rollback — outside any
 * transaction, or inside the next one on that connection — and a job's effect could land twice.
 */
function guardTransaction(sql: JobSql, signal: AbortSignal): { sql: JobSql; end(): void } {
  let open = true
  const refuse = () => {
    if (signal.aborted) throw signal.reason
    if (!open) throw new ChorusError('CHORUS_ERR_JOB_TRANSACTION_ENDED')
  }
  const guarded = new Proxy(sql, {
    apply(target, self, args) {
      refuse()
      return Reflect.apply(target as unknown as (...a: unknown[]) => unknown, self, args)
    },
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown
      if (typeof value !== 'function' || !['unsafe', 'file', 'savepoint'].includes(String(prop))) return value
      return (...args: unknown[]) => {
        refuse()
        return (value as (...a: unknown[]) => unknown).apply(target, args)
      }
    },
  })
  return { sql: guarded, end: () => void (open = false) }
}
