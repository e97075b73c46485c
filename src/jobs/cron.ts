/**
 * Cron: every eligible instance keeps a timer for each schedule's next tick (croner computes the
 * instants, so they are the same everywhere); at the tick, each tries to claim it by moving the
 * schedule's `last_tick` forward under a row lock, and the one that succeeds enqueues the tick as a
 * job in the same transaction. So each tick is enqueued once cluster-wide, and then runs like any
 * job: a dead runner's tick is handed back and run by a survivor. A row locked by another instance
 * means that instance is claiming: nobody waits for the lock, and each instance has at most one
 * claim per schedule in flight, so a slow database does not pile claims up.
 */
import { Cron } from 'croner'
import type { Logger } from 'pino'
import type { Sql } from '../db/connect.js'
import { schemaName, type SchemaName } from '../db/schema.js'
import { ChorusError, toError } from '../errors.js'
import type { Events } from '../events.js'
import type { Membership } from '../membership/membership.js'
import { Machine, type Transitions } from '../util/machine.js'
import { Rerun } from '../util/rerun.js'
import { checkName, DEFAULTS } from './limits.js'
import { checkOptions, cronOptions } from './options.js'
import type { Queue } from './queue.js'
import { advanceSchedule } from './sql/advanceSchedule.js'
import { createSchedule } from './sql/createSchedule.js'
import { lockSchedule } from './sql/lockSchedule.js'
import { registerSchedule } from './sql/registerSchedule.js'
import { scheduleLastTick } from './sql/scheduleLastTick.js'
import type { CronHandler, CronOptions, JobSql } from './types.js'
import type { Worker } from './worker.js'

/**
 * The scheduler's states, and the states each may be entered from:
 * - `active`: timers are armed for each schedule's next tick, and ticks are claimed.
 * - `stopped`: the instance drains or closes; no timer is armed and nothing is claimed any more.
 */
export const cronEnteredFrom = {
  active: [],
  stopped: ['active'],
} as const satisfies Transitions<CronState>

export type CronState = 'active' | 'stopped'

/** The scheduler's state machine (exported for its unit test). */
export function cronMachine(): Machine<CronState> {
  return new Machine<CronState>('cron scheduler', cronEnteredFrom, 'active')
}

/** A tick older than this when found unclaimed counts as missed (and follows the `missed` policy). */
const LATE_GRACE_MS = 2000

interface Pending {
  readonly tick: Date
  readonly catchUp: boolean
}

interface Schedule {
  readonly name: string
  readonly jobName: string
  readonly spec: string
  readonly timezone: string | null
  readonly missed: 'skip' | 'run-once'
  readonly cron: Cron
  timer: NodeJS.Timeout | null
  /** The tick the timer is set for. */
  next: Date | null
  /** Claims of this schedule, one at a time: a tick that comes during one is claimed after it. */
  readonly claims: Rerun
  /** The latest tick asked for and not yet claimed. */
  pending: Pending | null
}

export class CronScheduler {
  readonly #sql: Sql
  readonly #s: SchemaName
  readonly #queue: Queue
  readonly #worker: Worker
  readonly #events: Events
  readonly #log: Logger
  readonly #members: Membership
  readonly #instanceId: string
  readonly #schedules = new Map<string, Schedule>()
  readonly #state = cronMachine()

  /** `sql`: the jobs subsystem's own connections, which job claims use too. */
  constructor(deps: { sql: Sql; schema: string; queue: Queue; worker: Worker; events: Events; log: Logger; members: Membership; instanceId: string }) {
    this.#sql = deps.sql
    this.#s = schemaName(deps.sql, deps.schema)
    this.#queue = deps.queue
    this.#worker = deps.worker
    this.#events = deps.events
    this.#log = deps.log
    this.#members = deps.members
    this.#instanceId = deps.instanceId
  }

  add(name: string, spec: string, handler: CronHandler, opts: CronOptions = {}): void {
    checkName('CHORUS_ERR_CRON_NAME_INVALID', name, 'cron')
    // Its ticks run as the job `cron:<name>`, which must itself be a valid job name.
    if (name.length > 123) throw new ChorusError('CHORUS_ERR_CRON_NAME_INVALID', [JSON.stringify(name), 'must be at most 123 characters'])
    if (this.#schedules.has(name) || this.#worker.has(`cron:${name}`)) throw new ChorusError('CHORUS_ERR_CRON_DUPLICATE', [name])
    if (typeof handler !== 'function') {
      throw new ChorusError('CHORUS_ERR_CRON_OPTIONS_INVALID', ['handler', 'must be a function'], { details: { option: 'handler' } })
    }
    const o = checkOptions(cronOptions, opts, 'CHORUS_ERR_CRON_OPTIONS_INVALID')
    const timezone = o.timezone ?? null
    const missed = o.missed ?? 'skip'
    if (typeof spec !== 'string' || spec.trim() === '') throw new ChorusError('CHORUS_ERR_CRON_SPEC_INVALID', [name, 'the spec must be a non-empty string'])
    let cron: Cron
    try {
      cron = new Cron(spec, { paused: true, ...(timezone ? { timezone } : {}) })
    } catch (err) {
      throw new ChorusError('CHORUS_ERR_CRON_SPEC_INVALID', [name, toError(err).message], { cause: err })
    }
    if (cron.nextRun() === null) throw new ChorusError('CHORUS_ERR_CRON_SPEC_INVALID', [name, 'the spec never fires'])
    const jobName = `cron:${name}`
    this.#worker.define(
      jobName,
      (payload, ctx) => {
        const tick = new Date((payload as { tick: string }).tick)
        return handler(ctx.sql ? { signal: ctx.signal, tick, attempt: ctx.attempt, sql: ctx.sql as JobSql } : { signal: ctx.signal, tick, attempt: ctx.attempt })
      },
      {
        concurrency: 1,
        ...(o.roles !== undefined ? { roles: o.roles } : {}),
        ...(o.transactional !== undefined ? { transactional: o.transactional } : {}),
        ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
        retries: o.retries ?? DEFAULTS.cronRetries,
      },
      true,
    )
    const s: Schedule = {
      name,
      jobName,
      spec,
      timezone,
      missed,
      cron,
      timer: null,
      next: null,
      claims: new Rerun(
        () => this.#claimPending(s),
        (err) => this.#log.warn({ err: toError(err), cron: name }, 'could not claim a tick; another instance may'),
      ),
      pending: null,
    }
    this.#schedules.set(name, s)
    if (this.#worker.eligible(jobName)) void this.#register(s)
  }

  /** On rejoin: ticks may have passed unclaimed while this instance was isolated. */
  resume(): void {
    for (const s of this.#schedules.values()) if (this.#worker.eligible(s.jobName)) void this.#catchUp(s)
  }

  stop(): void {
    this.#state.to('stopped')
    for (const s of this.#schedules.values()) {
      if (s.timer) clearTimeout(s.timer)
      s.timer = null
    }
  }

  async #register(s: Schedule): Promise<void> {
    try {
      // A new schedule owes nothing before now: its last tick starts at the latest past instant.
      const baseline = s.cron.previousRuns(1, new Date())[0] ?? null
      await registerSchedule(this.#sql, this.#s, { name: s.name, spec: s.spec, timezone: s.timezone, baseline })
    } catch (err) {
      this.#log.warn({ err: toError(err), cron: s.name }, 'could not register the schedule; ticks are still claimed')
    }
    await this.#catchUp(s)
  }

  /** Ticks that passed unclaimed: the latest is claimed now if it is recent or the policy is `run-once`. */
  async #catchUp(s: Schedule): Promise<void> {
    const now = new Date()
    const latest = s.cron.previousRuns(1, now)[0]
    try {
      if (latest) {
        const last = await scheduleLastTick(this.#sql, this.#s, s.name)
        if (last === null || latest.getTime() > last.getTime()) {
          const late = now.getTime() - latest.getTime() > LATE_GRACE_MS
          if (!late || s.missed === 'run-once') await this.#claim(s, latest, late)
          else this.#events.emit('cron:tick:missed', { name: s.name, tick: latest, policy: s.missed })
        }
      }
    } catch (err) {
      this.#log.warn({ err: toError(err), cron: s.name }, 'could not check for missed ticks')
    }
    this.#arm(s, now)
  }

  #arm(s: Schedule, from: Date): void {
    if (!this.#state.is('active')) return
    if (s.timer) clearTimeout(s.timer)
    const next = s.cron.nextRun(from)
    s.next = next
    if (!next) return
    const wait = next.getTime() - Date.now()
    // Long waits are split: timers cannot wait longer than about 24.8 days.
    const max = 2 ** 31 - 1
    s.timer = setTimeout(() => {
      s.timer = null
      if (wait > max) this.#arm(s, from)
      else void this.#fire(s, next)
    }, Math.max(0, Math.min(wait, max)))
    s.timer.unref()
  }

  async #fire(s: Schedule, tick: Date): Promise<void> {
    // Armed from the tick itself, so a timer that fires a little early cannot pick the same tick twice.
    this.#arm(s, new Date(Math.max(Date.now(), tick.getTime())))
    if (this.#members.self.state !== 'up') return
    await this.#claim(s, tick, false)
  }

  /**
   * Claims `tick`, or — when a claim of this schedule is still in flight — leaves it to be claimed
   * after that one (only the latest such tick: claiming it reports the ones between as missed).
   */
  async #claim(s: Schedule, tick: Date, catchUp: boolean): Promise<void> {
    if (!s.pending || tick.getTime() > s.pending.tick.getTime()) s.pending = { tick, catchUp }
    const inFlight = s.claims.running
    const claimed = s.claims.run()
    if (!inFlight) await claimed
  }

  async #claimPending(s: Schedule): Promise<void> {
    const next = s.pending
    s.pending = null
    if (!next || !this.#state.is('active') || this.#members.self.state !== 'up') return
    try {
      await this.#claimTick(s, next.tick, next.catchUp)
    } catch (err) {
      this.#log.warn({ err: toError(err), cron: s.name, tick: next.tick }, 'could not claim a tick; another instance may')
    }
  }

  /**
   * claimTick: moves `last_tick` forward under the row lock and enqueues the tick, or does nothing
   * if another instance did, or holds the row lock (it is claiming).
   */
  async #claimTick(s: Schedule, tick: Date, catchUp: boolean): Promise<void> {
    const claimed = await this.#sql.begin(async (tx) => {
      let row = await lockSchedule(tx, this.#s, s.name)
      // None: another instance holds the row (it is claiming), or there is no row (its registration
      // failed) — then one is created, locked by this transaction.
      if (!row) {
        row = await createSchedule(tx, this.#s, { name: s.name, spec: s.spec, timezone: s.timezone })
      }
      if (!row) return null
      if (row.last_tick && row.last_tick.getTime() >= tick.getTime()) return null
      const iso = tick.toISOString()
      const job = await this.#queue.insertOne(tx, s.jobName, JSON.stringify({ tick: iso }), -1, 0, iso, 0)
      await advanceSchedule(tx, this.#s, { name: s.name, tick, jobId: job.id, instanceId: this.#instanceId })
      return { jobId: job.id, previous: row.last_tick }
    })
    if (!claimed) return
    this.#queue.wake(s.jobName, 0)
    if (claimed.previous && !catchUp) {
      const expected = s.cron.nextRun(claimed.previous)
      if (expected && expected.getTime() < tick.getTime()) this.#events.emit('cron:tick:missed', { name: s.name, tick: expected, policy: s.missed })
    }
    this.#events.emit('cron:tick:enqueued', { name: s.name, tick, jobId: claimed.jobId, catchUp })
  }
}

/** The next instant of a stored schedule (for status displays); null when the spec no longer parses. */
export function nextTick(spec: string, timezone: string | null, after: Date = new Date()): Date | null {
  try {
    return new Cron(spec, { paused: true, ...(timezone ? { timezone } : {}) }).nextRun(after)
  } catch {
    return null
  }
}
