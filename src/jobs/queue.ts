/**
 * The producing side of the job queue: enqueue (one or a batch), cancel, retry, read. Dedupe keys
 * make enqueue idempotent through a unique index and `on conflict do nothing`; every enqueue that
 * committed is announced on the bus so workers claim it at once (or set a timer for its run time),
 * and to this instance's worker in-process, so it does not wait for the bus's LISTEN connection.
 */
import type { Logger } from 'pino'
import type { Bus } from '../bus/bus.js'
import { channels } from '../bus/channels.js'
import type { Sql } from '../db/connect.js'
import { schemaName, type SchemaName } from '../db/schema.js'
import { ChorusError } from '../errors.js'
import type { Events } from '../events.js'
import { checkName, encodePayload, MAX_BATCH } from './limits.js'
import { checkEnqueueOptions, enqueueManyItem } from './options.js'
import { mark, markTime, tracing } from './trace.js'
import { cancelJob } from './sql/cancelJob.js'
import { findJobByKey } from './sql/findJobByKey.js'
import { findJobsByKeys } from './sql/findJobsByKeys.js'
import { getJob } from './sql/getJob.js'
import { insertJob } from './sql/insertJob.js'
import { insertJobs } from './sql/insertJobs.js'
import { retryJob } from './sql/retryJob.js'
import type { EnqueueManyItem, EnqueueOptions, JobRecord, JobSql } from './types.js'


export class Queue {
  readonly #sql: Sql
  readonly #s: SchemaName
  readonly #bus: Bus
  readonly #events: Events
  readonly #log: Logger
  #wakes = new Map<string, number>()
  #wakeScheduled = false
  /** This instance's worker, which gets what is announced here directly (and ignores its bus echo). */
  #local: ((data: string) => void) | null = null

  constructor(deps: { sql: Sql; schema: string; bus: Bus; events: Events; log: Logger }) {
    this.#sql = deps.sql
    this.#s = schemaName(deps.sql, deps.schema)
    this.#bus = deps.bus
    this.#events = deps.events
    this.#log = deps.log
  }

  async enqueue(name: string, payload: unknown, opts?: EnqueueOptions): Promise<string> {
    checkName('CHORUS_ERR_JOB_NAME_INVALID', name, 'job')
    const text = encodePayload(payload)
    const o = checkEnqueueOptions(opts)
    const r = await this.insertOne(this.#sql, name, text, o.atMs, o.delayMs, o.key, o.priority)
    if (r.inserted) this.#announce(r.id, name, r.dueInMs)
    else this.#events.emit('job:enqueued', { id: r.id, name, deduplicated: true })
    return r.id
  }

  /**
   * @internal Inserts one job (or finds the one holding its key) without announcing it: cron
   * calls this inside the transaction that claims a tick, and announces after the commit.
   */
  async insertOne(
    sql: Sql | JobSql,
    name: string,
    text: string,
    atMs: number,
    delayMs: number,
    key: string,
    priority: number,
  ): Promise<{ id: string; inserted: boolean; dueInMs: number }> {
    for (let i = 0; ; i++) {
      const row = await insertJob(sql, this.#s, { name, payload: text, atMs, delayMs, key, priority })
      if (row) return { id: row.id, inserted: true, dueInMs: row.due_in_ms }
      const existing = await findJobByKey(sql, this.#s, name, key)
      if (existing !== null) return { id: existing, inserted: false, dueInMs: 0 }
      // The conflicting job was swept between the two statements: insert again.
      if (i >= 3) throw new Error(`could not enqueue ${name}: its key kept conflicting`)
    }
  }

  /** Enqueues up to `MAX_BATCH` jobs in one statement; returns their ids in order. Nothing is enqueued if any item is invalid. */
  async enqueueMany(items: readonly EnqueueManyItem[]): Promise<string[]> {
    if (!Array.isArray(items)) throw new ChorusError('CHORUS_ERR_JOB_OPTIONS_INVALID', ['items', 'must be an array'], { details: { option: 'items' } })
    if (items.length > MAX_BATCH) throw new ChorusError('CHORUS_ERR_JOB_BATCH_TOO_LARGE', [items.length, MAX_BATCH], { details: { count: items.length, limit: MAX_BATCH } })
    if (items.length === 0) return []
    const names: string[] = []
    const payloads: string[] = []
    const priorities: number[] = []
    const ats: number[] = []
    const delays: number[] = []
    const keys: string[] = []
    for (const item of items) {
      if (item === null || typeof item !== 'object') throw new ChorusError('CHORUS_ERR_JOB_OPTIONS_INVALID', ['items', 'each item must be an object'], { details: { option: 'items' } })
      checkName('CHORUS_ERR_JOB_NAME_INVALID', item.name, 'job')
      payloads.push(encodePayload(item.payload))
      const o = checkEnqueueOptions(item, enqueueManyItem)
      names.push(item.name)
      priorities.push(o.priority)
      ats.push(o.atMs)
      delays.push(o.delayMs)
      keys.push(o.key)
    }
    const rows = await insertJobs(this.#sql, this.#s, { names, payloads, priorities, ats, delays, keys })
    const byKey = new Map<string, string>()
    const unkeyed: string[] = []
    for (const r of rows) {
      if (r.key === null) unkeyed.push(r.id)
      else byKey.set(`${r.name}\u0000${r.key}`, r.id)
      this.#announce(r.id, r.name, r.due_in_ms)
    }
    // Identity values are drawn in insertion order, which follows `ord`.
    unkeyed.sort((a, b) => (BigInt(a) < BigInt(b) ? -1 : BigInt(a) > BigInt(b) ? 1 : 0))
    const missing = items.map((_, i) => i).filter((i) => keys[i] !== '' && !byKey.has(`${names[i]}\u0000${keys[i]}`))
    if (missing.length > 0) {
      const found = await findJobsByKeys(
        this.#sql,
        this.#s,
        missing.map((i) => names[i]!),
        missing.map((i) => keys[i]!),
      )
      for (const f of found) {
        byKey.set(`${f.name}\u0000${f.key}`, f.id)
        this.#events.emit('job:enqueued', { id: f.id, name: f.name, deduplicated: true })
      }
    }
    let u = 0
    return items.map((_, i) => {
      if (keys[i] === '') return unkeyed[u++]!
      const id = byKey.get(`${names[i]}\u0000${keys[i]}`)
      if (id === undefined) throw new Error(`could not enqueue ${names[i]}: its key kept conflicting`)
      return id
    })
  }

  /** Cancels a queued or running job (a running handler's signal aborts). False if it had already finished. */
  async cancel(id: string | number | bigint): Promise<boolean> {
    const jobId = checkId(id)
    const row = await cancelJob(this.#sql, this.#s, jobId)
    if (!row) return false
    if (row.was === 'running') this.#send(`c ${jobId}`, 'a cancellation could not be published; the running handler is not aborted, and its outcome is not recorded')
    this.#events.emit('job:cancelled', { id: jobId })
    return true
  }

  /** Queues a failed or cancelled job again with a fresh set of attempts. False if it was not failed or cancelled. */
  async retry(id: string | number | bigint): Promise<boolean> {
    const jobId = checkId(id)
    const name = await retryJob(this.#sql, this.#s, jobId)
    if (name === null) return false
    this.#wake(name, 0)
    return true
  }

  async get(id: string | number | bigint): Promise<JobRecord | null> {
    const jobId = checkId(id)
    const r = await getJob(this.#sql, this.#s, jobId)
    if (!r) return null
    return {
      id: r.id,
      name: r.name,
      payload: r.payload,
      state: r.state,
      priority: r.priority,
      runAt: r.run_at,
      key: r.key,
      attempts: r.attempts,
      claimedBy: r.claimed_by,
      lastError: r.last_error,
      createdAt: r.created_at,
      finishedAt: r.finished_at,
    }
  }

  #announce(id: string, name: string, dueInMs: number): void {
    this.#events.emit('job:enqueued', { id, name, deduplicated: false })
    this.#wake(name, dueInMs)
  }

  /** Tells every worker that `name` has a job due in `dueInMs`; wake-ups of one event-loop turn leave as one message. */
  #wake(name: string, dueInMs: number): void {
    const due = Math.max(0, Math.ceil(dueInMs))
    const known = this.#wakes.get(name)
    if (known === undefined || due < known) this.#wakes.set(name, due)
    if (this.#wakeScheduled) return
    this.#wakeScheduled = true
    setImmediate(() => {
      this.#wakeScheduled = false
      const lines = [...this.#wakes].map(([n, d]) => `w ${n} ${d}`)
      this.#wakes = new Map()
      this.publishWakes(lines)
    })
  }

  /** @internal */
  publishWakes(lines: string[]): void {
    // Keep each message well under NOTIFY's limit; a lost wake-up is caught by the safety poll.
    for (let i = 0; i < lines.length; i += 100) this.#send(lines.slice(i, i + 100).join('\n'), 'a wake-up could not be published; the safety poll will find the job')
  }

  /** @internal The worker of this instance: `handler` gets every wake-up and cancellation at once. */
  onLocal(handler: (data: string) => void): () => void {
    this.#local = handler
    return () => {
      if (this.#local === handler) this.#local = null
    }
  }

  /** To this instance's worker now, and to every instance over the bus. */
  #send(data: string, ifLost: string): void {
    const traced = tracing()
    if (traced) mark({ stage: 'wake-sent', at: markTime() })
    this.#bus.publish(channels.jobs, data).then(
      () => {
        if (traced) mark({ stage: 'wake-notified', at: markTime() })
      },
      (err: unknown) => {
        this.#log.debug({ err }, ifLost)
      },
    )
    try {
      this.#local?.(data)
    } catch (err) {
      this.#log.error({ err }, 'the worker of this instance failed on a wake-up or cancellation')
    }
  }

  /** @internal */
  wake(name: string, dueInMs: number): void {
    this.#wake(name, dueInMs)
  }
}

function checkId(id: unknown): string {
  const text = typeof id === 'number' || typeof id === 'bigint' ? String(id) : id
  if (typeof text !== 'string' || !/^[1-9][0-9]{0,18}$/.test(text)) {
    throw new ChorusError('CHORUS_ERR_JOB_OPTIONS_INVALID', ['id', 'must be a job id as returned by enqueue'], { details: { option: 'id' } })
  }
  return text
}
