/**
 * `cluster.jobs`: the durable job queue and cron, as one subsystem. Enqueue anywhere; a job runs on
 * one live instance that defines it (and has one of its roles), is handed back at once when that
 * instance is declared down, and — when `transactional` — takes effect exactly once.
 */
import { drainGraceMs } from './limits.js'
import type { Logger } from 'pino'
import type { Sql } from '../db/connect.js'
import { ChorusError } from '../errors.js'
import type { Subsystem, SubsystemDeps } from '../subsystem.js'
import { CronScheduler } from './cron.js'
import { Queue } from './queue.js'
import type {
  CronHandler,
  CronOptions,
  DefineOptions,
  EnqueueManyItem,
  EnqueueOptions,
  JobHandler,
  JobRecord,
  TransactionalJobHandler,
} from './types.js'
import { Worker } from './worker.js'

export class Jobs implements Subsystem {
  /** How long drain waits for running handlers (fits the close deadline). */
  readonly #drainGraceMs: number
  readonly name = 'jobs'
  readonly #q: Sql
  readonly #log: Logger
  readonly #queue: Queue
  readonly #worker: Worker
  readonly #cron: CronScheduler
  readonly #offs: (() => void)[] = []
  #closed = false

  /** @internal built by the cluster */
  constructor(deps: SubsystemDeps) {
    this.#drainGraceMs = drainGraceMs(deps.options.closeTimeoutMs)
    this.#log = deps.log.child({ subsystem: 'jobs' })
    // Claims (of jobs and of cron ticks) and plain completions get connections of their own, so
    // handlers busy with the work pool cannot starve them. Job claims and completions commit without
    // waiting for the WAL flush (set per transaction in each statement, as a pooler keeps no session
    // settings): a claim or completion lost to a database crash only makes a job run again (members,
    // unlogged, are emptied by the crash, so every claim is handed back), which at-least-once allows;
    // a transactional job's completion commits in the work pool, with its effects, and a cron tick's
    // claim, which enqueues its job, waits for the flush: both stay durable.
    this.#q = deps.db.open('jobs', 2)
    const schema = deps.db.schema
    this.#queue = new Queue({ sql: deps.db.sql, schema, bus: deps.bus, events: deps.events, log: this.#log })
    this.#worker = new Worker({
      sql: deps.db.sql,
      q: this.#q,
      schema,
      queue: this.#queue,
      bus: deps.bus,
      events: deps.events,
      log: this.#log,
      members: deps.members,
      instanceId: deps.options.instanceId,
      roles: deps.options.roles,
    })
    this.#cron = new CronScheduler({
      sql: this.#q,
      schema,
      queue: this.#queue,
      worker: this.#worker,
      events: deps.events,
      log: deps.log.child({ subsystem: 'cron' }),
      members: deps.members,
      instanceId: deps.options.instanceId,
    })
    this.#offs.push(deps.members.on('member:self:rejoined', () => this.#cron.resume()))
  }

  /**
   * Defines how jobs of `name` run on this instance. Only instances that define a job (and have
   * one of its `roles`) claim it. With `transactional: true` the handler gets `ctx.sql`, the
   * transaction that also marks the job complete.
   */
  define<P = unknown>(name: string, handler: TransactionalJobHandler<P>, opts: DefineOptions & { transactional: true }): void
  define<P = unknown>(name: string, handler: JobHandler<P>, opts?: DefineOptions): void
  define(name: string, handler: JobHandler<never> | TransactionalJobHandler<never>, opts?: DefineOptions): void {
    this.#worker.define(name, handler as JobHandler, opts)
  }

  /**
   * Enqueues a job and resolves with its id once it is stored. With `key`, a job of the same name
   * and key that is still kept makes this a no-op that returns the existing id.
   */
  async enqueue(name: string, payload?: unknown, opts?: EnqueueOptions): Promise<string> {
    this.#assertOpen('enqueue')
    return this.#queue.enqueue(name, payload, opts)
  }

  /** Enqueues up to 10 000 jobs in one statement; ids in the order given. All or nothing on bad input. */
  async enqueueMany(items: readonly EnqueueManyItem[]): Promise<string[]> {
    this.#assertOpen('enqueue')
    return this.#queue.enqueueMany(items)
  }

  /** Cancels a queued or running job (a running handler's signal aborts). False when it had already finished. */
  async cancel(id: string): Promise<boolean> {
    this.#assertOpen('cancel')
    return this.#queue.cancel(id)
  }

  /** Queues a failed (or cancelled) job again with fresh attempts. False when it is neither. */
  async retry(id: string): Promise<boolean> {
    this.#assertOpen('retry')
    return this.#queue.retry(id)
  }

  /** The stored job, or null when there is none with this id (never enqueued, or swept). */
  async get(id: string): Promise<JobRecord | null> {
    return this.#queue.get(id)
  }

  /**
   * Runs `handler` at every tick of `spec` (cron syntax, seconds optional), once per tick across
   * the cluster, on an instance with one of `roles`.
   */
  cron(name: string, spec: string, handler: CronHandler, opts?: CronOptions): void {
    this.#assertOpen('schedule cron')
    this.#cron.add(name, spec, handler, opts)
  }

  /** Part of the subsystem lifecycle: called by the cluster, not by applications. */
  async start(): Promise<void> {
    this.#worker.start()
  }

  /** Part of the subsystem lifecycle: called by the cluster, not by applications. */
  async drain(): Promise<void> {
    this.#cron.stop()
    await this.#worker.drain(this.#drainGraceMs)
  }

  /** Part of the subsystem lifecycle: called by the cluster, not by applications. */
  async close(): Promise<void> {
    this.#closed = true
    this.#cron.stop()
    await this.#worker.close()
    for (const off of this.#offs.splice(0)) off()
    await this.#q.end({ timeout: 5 }).catch(() => undefined)
  }

  #assertOpen(what: string): void {
    if (this.#closed) throw new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', ['closed', what])
  }
}
