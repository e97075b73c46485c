/**
 * The public shapes of jobs, cron and singletons: handlers, their context, and the options of
 * `define`, `enqueue`, `cron` and `singleton`. Defaults are stated here and applied in limits.ts.
 */
import type postgres from 'postgres'

/** The transaction a `transactional` job runs in; its writes commit together with the job's completion. */
export type JobSql = postgres.TransactionSql<Record<string, never>>

/** What a running job knows about itself. */
export interface JobInfo {
  readonly id: string
  readonly name: string
  /** 1 for the first run, 2 for the first retry, … */
  readonly attempt: number
  /** Runs allowed in all: `retries + 1`. */
  readonly maxAttempts: number
  readonly key: string | null
  readonly priority: number
  readonly runAt: Date
  readonly createdAt: Date
}

export interface JobContext {
  /**
   * Aborted when the job times out, is cancelled, when this instance isolates itself from the
   * cluster (its claim may then pass to another instance), or when a drain's grace period ends.
   * `signal.reason` is a `ChorusError` naming which.
   */
  readonly signal: AbortSignal
  readonly job: JobInfo
  readonly attempt: number
  /** Only for `transactional` jobs: the transaction that also marks the job complete. */
  readonly sql?: JobSql
}

export interface TransactionalJobContext extends JobContext {
  readonly sql: JobSql
}

export type JobHandler<P = unknown> = (payload: P, ctx: JobContext) => unknown
export type TransactionalJobHandler<P = unknown> = (payload: P, ctx: TransactionalJobContext) => unknown

/** Delay before retry `attempt + 1`, after attempt `attempt` failed. */
export type BackoffFunction = (attempt: number, error: Error) => number

export interface BackoffOptions {
  /** Delay after the first failure. Default: 1000 ms. */
  delayMs?: number
  /** Each further failure multiplies the delay by this. Default: 2. */
  factor?: number
  /** Longest delay. Default: 1 hour. */
  maxDelayMs?: number
  /** Fraction of the delay drawn at random, up or down (0 = exact). Default: 0.2. */
  jitter?: number
}

export interface DefineOptions {
  /** Jobs of this name running at once on this instance. Default: 5. */
  concurrency?: number
  /** The handler's signal aborts after this long and the attempt fails. Default: 5 minutes. */
  timeoutMs?: number
  /** Further attempts after a failure; then the job is kept as `failed`. Default: 3. */
  retries?: number
  /** Delay between attempts. Default: exponential from 1 s, factor 2, at most 1 h, 20 % jitter. */
  backoff?: BackoffOptions | BackoffFunction
  /** Run only on instances with one of these roles. Default: any instance. */
  roles?: readonly string[]
  /**
   * Run the handler inside the transaction that marks the job complete (`ctx.sql`): its writes
   * and the completion commit together or not at all — an exactly-once effect. Default: false.
   */
  transactional?: boolean
}

export interface EnqueueOptions {
  /** Run no earlier than this instant. */
  runAt?: Date
  /** Run no earlier than this many milliseconds from now (database time). Must be ≥ 0. */
  delayMs?: number
  /**
   * Dedupe key: while a job of this name and key is kept (pending, running, failed, or finished
   * within the retention), enqueueing it again returns the existing job's id and enqueues nothing.
   */
  key?: string
  /** Higher runs first among due jobs of the same name. Default: 0. */
  priority?: number
}

export interface EnqueueManyItem extends EnqueueOptions {
  name: string
  payload?: unknown
}

export type JobState = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled'

/** A job as stored (`jobs.get(id)`). */
export interface JobRecord {
  readonly id: string
  readonly name: string
  readonly payload: unknown
  readonly state: JobState
  readonly priority: number
  readonly runAt: Date
  readonly key: string | null
  readonly attempts: number
  readonly claimedBy: string | null
  readonly lastError: string | null
  readonly createdAt: Date
  readonly finishedAt: Date | null
}

export interface CronContext {
  /** Aborted on timeout, isolation, or the end of a drain's grace period (as for jobs). */
  readonly signal: AbortSignal
  /** The scheduled instant of this tick (the same on every instance). */
  readonly tick: Date
  readonly attempt: number
  /** Only for `transactional` schedules. */
  readonly sql?: JobSql
}

export type CronHandler = (ctx: CronContext) => unknown

export interface CronOptions {
  /** IANA time zone the spec is read in. Default: the process's. */
  timezone?: string
  /** Run only on instances with one of these roles. Default: any instance. */
  roles?: readonly string[]
  /**
   * Ticks that passed while no eligible instance was running: `skip` them, or `run-once` (one
   * run, for the latest of them, as soon as an eligible instance is up). Default: `skip`.
   */
  missed?: 'skip' | 'run-once'
  /** As for jobs: the handler's writes in `ctx.sql` commit with the tick's completion. Default: false. */
  transactional?: boolean
  /** Default: 5 minutes. */
  timeoutMs?: number
  /** Further attempts of a failed tick. Default: 0. */
  retries?: number
}

export interface SingletonOptions {
  /**
   * Called on the one instance that holds the singleton. `signal` aborts when it must stop (this
   * instance drains, closes, or isolates itself); the next holder starts only after that. `start`
   * may return at once: the singleton stays held until the signal aborts. If it throws, the
   * singleton is released and acquired again (here or elsewhere) after a delay.
   */
  start(signal: AbortSignal): unknown
  /** Run only on instances with one of these roles. Default: any instance. */
  roles?: readonly string[]
}
