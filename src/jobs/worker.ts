/**
 * The consuming side of the job queue. Claims due jobs of the names this instance defines (and may
 * run, by role) in batches with `FOR UPDATE SKIP LOCKED`, runs each under a signal, and records the
 * outcome. A claim carries this instance's epoch and a claim id unique across all claims: the
 * completion matches that claim id, so a job handed back meanwhile (its claimer declared down) is
 * never completed by the old claim, and a `transactional` handler's writes roll back with it.
 */
import { reconnectDelayMs } from '../db/backoff.js'
import { performance } from 'node:perf_hooks'
import type { Logger } from 'pino'
import type { Bus } from '../bus/bus.js'
import type { Sql } from '../db/connect.js'
import { schemaName, sequenceName, type SchemaName } from '../db/schema.js'
import { ChorusError, isChorusError, toError } from '../errors.js'
import type { Events } from '../events.js'
import type { Membership } from '../membership/membership.js'
import { checkDefineOptions, checkName, CLAIM_BATCH, DRAIN_GRACE_MS, errorText, KEEP_FINISHED_MS, SAFETY_POLL_MS, SWEEP_EVERY_MS, type CheckedDefine } from './limits.js'
import { JOBS_CHANNEL, type Queue } from './queue.js'
import { claimJobs, type ClaimRow } from './sql/claimJobs.js'
import { completeJob } from './sql/completeJob.js'
import { completeJobs } from './sql/completeJobs.js'
import { failJob } from './sql/failJob.js'
import { giveUpJob } from './sql/giveUpJob.js'
import { handBackJobs } from './sql/handBackJobs.js'
import { nextDue } from './sql/nextDue.js'
import { requeueJob } from './sql/requeueJob.js'
import { requeueMemberJobs } from './sql/requeueMemberJobs.js'
import { staleClaims } from './sql/staleClaims.js'
import { sweepJobs } from './sql/sweepJobs.js'
import type { DefineOptions, JobContext, JobHandler, JobInfo } from './types.js'

interface Definition extends CheckedDefine {
  readonly name: string
  readonly handler: JobHandler
  /** This instance has one of the roles (or the job needs none). */
  readonly eligible: boolean
  running: number
  /** Due jobs of this name may be waiting. */
  backlog: boolean
  /** Claimed here, not yet started (prefetched for fast jobs). */
  buffer: { row: ClaimRow; epoch: number }[]
  /** Recent handler duration (moving average), ms; prefetching is for fast jobs only. */
  avgMs: number
}

/** Jobs whose handlers take less than this on average are claimed ahead of free slots. */
const FAST_JOB_MS = 5
/** A fast job's definition may hold this many times its concurrency claimed ahead (at most CLAIM_BATCH). */
const PREFETCH_FACTOR = 4

/** Jobs of `d` this instance may hold claimed at once: its concurrency, plus a prefetch when its jobs are fast. */
function capacity(d: Definition): number {
  return d.concurrency + (d.avgMs < FAST_JOB_MS ? Math.min(CLAIM_BATCH, PREFETCH_FACTOR * d.concurrency) : 0)
}

function room(d: Definition): number {
  return Math.min(CLAIM_BATCH, capacity(d) - d.running - d.buffer.length)
}


interface Running {
  readonly id: string
  readonly claimId: string
  readonly controller: AbortController
}

interface Completion {
  id: string
  claimId: string
  resolve(ok: boolean): void
}

/**
 * - `running`: claiming and running jobs.
 * - `draining`: claims nothing new; running handlers finish within the grace period.
 * - `closed`: nothing runs; claims left were handed back.
 */
type WorkerState = 'running' | 'draining' | 'closed'

export interface WorkerDeps {
  /** The work pool: transactional handlers run in transactions of it. */
  sql: Sql
  /** The queue's own connections, for claims and completions. */
  q: Sql
  schema: string
  queue: Queue
  bus: Bus
  events: Events
  log: Logger
  members: Membership
  instanceId: string
  roles: readonly string[]
}

export class Worker {
  readonly #d: WorkerDeps
  readonly #s: SchemaName
  readonly #claimSeq: string
  readonly #defs = new Map<string, Definition>()
  readonly #running = new Map<string, Running>()
  #state: WorkerState = 'running'
  #claiming = false
  #again = false
  #checkNextDue = true
  #dueTimer: NodeJS.Timeout | null = null
  #dueAt = Number.POSITIVE_INFINITY
  #pollTimer: NodeJS.Timeout | null = null
  #sweepTimer: NodeJS.Timeout | null = null
  #retryTimer: NodeJS.Timeout | null = null
  /** Claim rounds failed in a row (a database that does not answer); the retry backs off on it. */
  #claimFailures = 0
  #completions: Completion[] = []
  #flushing: Promise<void> | null = null
  #flushScheduled = false
  readonly #writes = new Set<Promise<unknown>>()
  readonly #offs: (() => void)[] = []
  #signal: AbortSignal | null = null

  constructor(deps: WorkerDeps) {
    this.#d = deps
    this.#s = schemaName(deps.q, deps.schema)
    this.#claimSeq = sequenceName(deps.schema, 'job_claims')
  }

  define(name: string, handler: JobHandler, opts: DefineOptions | undefined, internal = false): void {
    checkName('CHORUS_ERR_JOB_NAME_INVALID', name, 'job')
    if (!internal && name.startsWith('cron:')) {
      throw new ChorusError('CHORUS_ERR_JOB_NAME_INVALID', [JSON.stringify(name), 'names starting with "cron:" belong to cron schedules'])
    }
    if (typeof handler !== 'function') {
      throw new ChorusError('CHORUS_ERR_JOB_OPTIONS_INVALID', ['handler', 'must be a function'], { details: { option: 'handler' } })
    }
    if (this.#defs.has(name)) throw new ChorusError('CHORUS_ERR_JOB_DUPLICATE', [name])
    this.#assertOpen('define a job')
    const checked = checkDefineOptions(opts, internal ? { retries: 0 } : undefined)
    const roles = this.#d.roles
    const eligible = checked.roles.length === 0 || checked.roles.some((r) => roles.includes(r))
    this.#defs.set(name, { ...checked, name, handler, eligible, running: 0, backlog: true, buffer: [], avgMs: Number.POSITIVE_INFINITY })
    if (!eligible) this.#d.log.info({ job: name, roles: checked.roles }, 'jobs: defined, but this instance has none of its roles; it will not run here')
    this.#checkNextDue = true
    this.#poke()
  }

  has(name: string): boolean {
    return this.#defs.has(name)
  }

  /** Whether `name` is defined and may run on this instance. */
  eligible(name: string): boolean {
    return this.#defs.get(name)?.eligible ?? false
  }

  start(): void {
    const { bus, members, events } = this.#d
    // This instance's own wake-ups and cancellations come in-process, before their bus echo.
    this.#offs.push(
      this.#d.queue.onLocal((data) => this.#onMessage(data)),
      bus.subscribe(JOBS_CHANNEL, (data, meta) => {
        if (!meta.local) this.#onMessage(data)
      }),
    )
    this.#offs.push(
      members.on('member:down', ({ member }) => void this.#requeueMember(member.instanceId, member.epoch)),
      members.on('member:self:rejoined', () => {
        this.#watchSignal()
        this.#wakeAll()
      }),
      events.on('bus:gap', () => this.#wakeAll()),
    )
    this.#watchSignal()
    this.#schedulePoll()
    this.#sweepTimer = setInterval(() => void this.#sweep(), SWEEP_EVERY_MS)
    this.#sweepTimer.unref()
  }

  /** Stops claiming, lets running handlers finish within the grace period, then hands back what is left. */
  async drain(graceMs = DRAIN_GRACE_MS): Promise<void> {
    if (this.#state !== 'running') return
    this.#setState('draining')
    this.#stopTimers()
    const buffered = this.#takeBuffered()
    if (buffered.length > 0) await this.#handBack(buffered.map((b) => b.row.claim_id), buffered[0]!.epoch)
    const deadline = performance.now() + graceMs
    while (this.#running.size > 0 && performance.now() < deadline) {
      await sleep(Math.min(50, Math.max(1, deadline - performance.now())))
    }
    const left = [...this.#running.values()]
    const epoch = this.#d.members.self.epoch
    for (const r of left) r.controller.abort(new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', ['draining', 'running this job']))
    await this.#flushAll()
    if (left.length > 0) await this.#handBack(left.map((r) => r.claimId), epoch)
  }

  async close(): Promise<void> {
    await this.drain()
    this.#setState('closed')
    this.#stopTimers()
    if (this.#sweepTimer) clearInterval(this.#sweepTimer)
    for (const off of this.#offs.splice(0)) off()
  }

  // ---- state ----------------------------------------------------------------------------------

  #setState(next: WorkerState): void {
    switch (next) {
      case 'running':
      case 'draining':
      case 'closed':
        this.#state = next
        return
      default: {
        const never: never = next
        throw new Error(`unknown state ${String(never)}`)
      }
    }
  }

  #assertOpen(what: string): void {
    if (this.#state !== 'running') throw new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', [this.#state, what])
  }

  #canClaim(): boolean {
    return this.#state === 'running' && this.#d.members.self.state === 'up'
  }

  /** Isolation aborts every running handler: its claim may pass to another instance. */
  #watchSignal(): void {
    const signal = this.#d.members.signal
    if (signal === this.#signal) return
    this.#signal = signal
    const onAbort = () => {
      // Peers hand these claims back once they see this instance down.
      this.#takeBuffered()
      for (const r of this.#running.values()) r.controller.abort(signal.reason)
    }
    if (signal.aborted) onAbort()
    else signal.addEventListener('abort', onAbort, { once: true })
  }

  #takeBuffered(): { row: ClaimRow; epoch: number }[] {
    const all: { row: ClaimRow; epoch: number }[] = []
    for (const d of this.#defs.values()) all.push(...d.buffer.splice(0))
    return all
  }

  /** Starts buffered jobs of `def` while it has free slots. */
  #dispatch(def: Definition): void {
    while (def.running < def.concurrency && def.buffer.length > 0) {
      const { row, epoch } = def.buffer.shift()!
      if (this.#d.members.self.epoch !== epoch || this.#state !== 'running') continue
      void this.#execute(def, row, epoch)
    }
  }

  // ---- wake-ups -------------------------------------------------------------------------------

  #onMessage(data: string): void {
    for (const line of data.split('\n')) {
      const [kind, a, b] = line.split(' ')
      if (kind === 'w' && a !== undefined) {
        const def = this.#defs.get(a)
        if (!def?.eligible) continue
        const due = Number(b)
        if (!(due > 0)) {
          def.backlog = true
          this.#poke()
        } else {
          this.#setDue(due)
        }
      } else if (kind === 'c' && a !== undefined) {
        for (const d of this.#defs.values()) {
          const i = d.buffer.findIndex((b) => b.row.id === a)
          if (i >= 0) d.buffer.splice(i, 1)
        }
        for (const r of this.#running.values()) {
          if (r.id === a) r.controller.abort(new ChorusError('CHORUS_ERR_JOB_CANCELLED', [a]))
        }
      }
    }
  }

  #wakeAll(): void {
    for (const def of this.#defs.values()) if (def.eligible) def.backlog = true
    this.#checkNextDue = true
    this.#poke()
  }

  #setDue(inMs: number): void {
    if (this.#state !== 'running') return
    const at = performance.now() + inMs
    if (this.#dueTimer && at >= this.#dueAt) return
    if (this.#dueTimer) clearTimeout(this.#dueTimer)
    this.#dueAt = at
    this.#dueTimer = setTimeout(() => {
      this.#dueTimer = null
      this.#dueAt = Number.POSITIVE_INFINITY
      this.#wakeAll()
    }, Math.min(inMs, 2 ** 31 - 1))
    this.#dueTimer.unref()
  }

  #schedulePoll(): void {
    if (this.#state !== 'running') return
    // Jittered, so instances do not poll in step.
    this.#pollTimer = setTimeout(() => {
      this.#wakeAll()
      void this.#handBackOrphans()
      this.#schedulePoll()
    }, SAFETY_POLL_MS * (0.8 + 0.4 * Math.random()))
    this.#pollTimer.unref()
  }

  #stopTimers(): void {
    for (const t of [this.#dueTimer, this.#pollTimer, this.#retryTimer]) if (t) clearTimeout(t)
    this.#dueTimer = this.#pollTimer = this.#retryTimer = null
    this.#dueAt = Number.POSITIVE_INFINITY
  }

  // ---- claiming -------------------------------------------------------------------------------

  #poke(): void {
    if (this.#state !== 'running') return
    if (this.#claiming) {
      this.#again = true
      return
    }
    this.#claiming = true
    void this.#claimLoop().finally(() => {
      this.#claiming = false
      if (this.#again) {
        this.#again = false
        this.#poke()
      }
    })
  }

  async #claimLoop(): Promise<void> {
    try {
      for (;;) {
        this.#again = false
        if (!this.#canClaim()) return
        const wanted = [...this.#defs.values()].filter((d) => d.eligible && d.backlog && room(d) > 0)
        if (wanted.length === 0) break
        const counts = wanted.map(room)
        const epoch = this.#d.members.self.epoch
        const t0 = performance.now()
        const rows = await this.#claimJobs(
          wanted.map((d) => d.name),
          counts,
          epoch,
        )
        const claimed = rows.filter((r) => !r.requeued)
        this.#d.log.trace({ ms: performance.now() - t0, asked: counts, got: claimed.length }, 'jobs: claimed')
        const requeued = rows.filter((r) => r.requeued)
        if (!this.#canClaim() || this.#d.members.self.epoch !== epoch) {
          if (claimed.length > 0) await this.#handBack(claimed.map((r) => r.claim_id), epoch)
          return
        }
        const got = new Map<string, number>()
        for (const r of claimed) {
          got.set(r.name, (got.get(r.name) ?? 0) + 1)
          this.#defs.get(r.name)!.buffer.push({ row: r, epoch })
        }
        for (const d of wanted) this.#dispatch(d)
        wanted.forEach((d, i) => {
          if ((got.get(d.name) ?? 0) < counts[i]!) d.backlog = false
        })
        if (requeued.length > 0) this.#requeued(requeued, 'claim-expired', null)
        if (!this.#again && !wanted.some((d) => d.backlog && room(d) > 0)) break
      }
      if (this.#checkNextDue && this.#canClaim()) {
        this.#checkNextDue = false
        await this.#nextDue()
      }
      this.#claimFailures = 0
    } catch (err) {
      if (this.#state !== 'running') return
      const delay = reconnectDelayMs(this.#claimFailures++)
      // Once per run of failures at warn: a database that is away fails every retry.
      this.#d.log[this.#claimFailures === 1 ? 'warn' : 'debug']({ err: toError(err), retryInMs: Math.round(delay) }, 'jobs: claiming failed; trying again')
      this.#checkNextDue = true
      if (this.#retryTimer) clearTimeout(this.#retryTimer)
      this.#retryTimer = setTimeout(() => this.#wakeAll(), delay)
      this.#retryTimer.unref()
    }
  }

  /**
   * claimJobs: hands back claims whose epoch is no longer live (the fallback to `member:down`),
   * then claims up to `counts[i]` due jobs of `names[i]` for this instance's epoch.
   */
  #claimJobs(names: string[], counts: number[], epoch: number): Promise<ClaimRow[]> {
    return claimJobs(this.#d.q, this.#s, { names, counts, instanceId: this.#d.instanceId, epoch, claimSeq: this.#claimSeq })
  }

  /** Sets the timer for the next job not yet due. */
  async #nextDue(): Promise<void> {
    const names = [...this.#defs.values()].filter((d) => d.eligible).map((d) => d.name)
    if (names.length === 0) return
    const due = await nextDue(this.#d.q, this.#s, names)
    if (due === null) return
    // Due already but not claimed: claimed meanwhile elsewhere, or every slot is busy; look again soon.
    this.#setDue(due > 0 ? due : 250)
  }

  // ---- running --------------------------------------------------------------------------------

  async #execute(def: Definition, row: ClaimRow, epoch: number): Promise<void> {
    def.running++
    const controller = new AbortController()
    const run: Running = { id: row.id, claimId: row.claim_id, controller }
    this.#running.set(row.claim_id, run)
    if (this.#d.members.signal.aborted) controller.abort(this.#d.members.signal.reason)
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
      this.#running.delete(row.claim_id)
      def.running--
      const ms = performance.now() - started
      def.avgMs = Number.isFinite(def.avgMs) ? 0.8 * def.avgMs + 0.2 * ms : ms
      this.#dispatch(def)
      if (def.backlog) this.#poke()
    }
    try {
      if (row.attempts > maxAttempts) {
        // The last allowed attempt's claimer went down with it: the job fails without another run.
        await this.#giveUp(row)
        return
      }
      this.#d.events.emit('job:started', { id: row.id, name: row.name, attempt: row.attempts })
      timer = setTimeout(() => controller.abort(new ChorusError('CHORUS_ERR_JOB_TIMEOUT', [row.name, row.id, def.timeoutMs])), def.timeoutMs)
      const { signal } = controller
      if (def.transactional) {
        const tx = this.#d.sql.begin(async (sql) => {
          const ctx: JobContext = { signal, job, attempt: row.attempts, sql }
          await untilAborted(Promise.resolve().then(() => def.handler(row.payload, ctx)), signal)
          if (!(await completeJob(sql, this.#s, { id: row.id, claimId: row.claim_id, epoch }))) throw new ChorusError('CHORUS_ERR_JOB_CLAIM_LOST', [row.name, row.id])
        })
        // The transaction rolls back by itself when the handler is aborted; do not wait for it.
        await untilAborted(tx, signal)
      } else {
        const ctx: JobContext = { signal, job, attempt: row.attempts }
        await untilAborted(Promise.resolve().then(() => def.handler(row.payload, ctx)), signal)
        release()
        if (!(await this.#complete(row.id, row.claim_id))) {
          this.#claimLost(row)
          return
        }
      }
      this.#d.events.emit('job:completed', { id: row.id, name: row.name, attempt: row.attempts, durationMs: performance.now() - started })
    } catch (err) {
      const cause = controller.signal.aborted ? controller.signal.reason : err
      if (isChorusError(cause, 'CHORUS_ERR_JOB_CLAIM_LOST')) this.#claimLost(row)
      else if (isChorusError(cause, 'CHORUS_ERR_MEMBERSHIP_ISOLATED') || isChorusError(cause, 'CHORUS_ERR_CLUSTER_CLOSED')) {
        // Isolated: peers hand the claim back. Draining: drain() hands it back.
      } else if (isChorusError(cause, 'CHORUS_ERR_JOB_CANCELLED')) {
        // Already marked cancelled by cancel().
      } else {
        await this.#fail(def, row, toError(cause))
      }
    } finally {
      release()
    }
  }

  #claimLost(row: ClaimRow): void {
    this.#d.log.warn({ job: row.name, id: row.id, attempt: row.attempts }, 'jobs: the claim was lost before completion (handed back or cancelled); nothing was recorded')
    this.#d.events.emit('job:claim:lost', { id: row.id, name: row.name, attempt: row.attempts })
  }

  /** completeJobs: completions of one event-loop turn are written together. */
  #complete(id: string, claimId: string): Promise<boolean> {
    return new Promise((resolve) => {
      this.#completions.push({ id, claimId, resolve })
      if (this.#flushScheduled || this.#flushing) return
      this.#flushScheduled = true
      setImmediate(() => void this.#flush())
    })
  }

  #flush(): Promise<void> {
    this.#flushScheduled = false
    this.#flushing ??= this.#flushLoop().finally(() => {
      this.#flushing = null
    })
    return this.#flushing
  }

  async #flushLoop(): Promise<void> {
    for (let failures = 0; this.#completions.length > 0; ) {
      const batch = this.#completions.splice(0, 1000)
      let done: Set<string>
      try {
        const rows = await completeJobs(this.#d.q, this.#s, { ids: batch.map((c) => c.id), claimIds: batch.map((c) => c.claimId) })
        done = new Set(rows.map((r) => r.id))
      } catch (err) {
        if (this.#state === 'closed') {
          for (const c of batch) c.resolve(false)
          continue
        }
        // The jobs stay claimed by this live epoch, so nobody else runs them meanwhile: write again.
        this.#d.log.warn({ err: toError(err), jobs: batch.length }, 'jobs: could not record completions; retrying')
        this.#completions.unshift(...batch)
        await sleep(reconnectDelayMs(failures++))
        continue
      }
      failures = 0
      for (const c of batch) c.resolve(done.has(c.id))
    }
  }

  async #flushAll(): Promise<void> {
    while (this.#completions.length > 0 || this.#flushing || this.#writes.size > 0) {
      await Promise.allSettled([this.#flush(), ...this.#writes])
    }
  }

  async #fail(def: Definition, row: ClaimRow, error: Error): Promise<void> {
    const retry = row.attempts < def.retries + 1
    let delay = 0
    if (retry) {
      try {
        delay = Math.max(0, Math.min(2 ** 31 - 1, Number(def.backoff(row.attempts, error)) || 0))
      } catch (err) {
        this.#d.log.warn({ err: toError(err), job: def.name }, 'jobs: the backoff function threw; retrying at once')
      }
    }
    const text = errorText(error)
    const write = this.#persist(async () =>
      retry
        ? requeueJob(this.#d.q, this.#s, { id: row.id, claimId: row.claim_id, delayMs: delay, error: text })
        : failJob(this.#d.q, this.#s, { id: row.id, claimId: row.claim_id, error: text }),
    )
    const rows = await write
    if (!rows) return
    if (rows.length === 0) {
      this.#claimLost(row)
      return
    }
    this.#d.log.debug({ job: def.name, id: row.id, attempt: row.attempts, err: error, retryInMs: retry ? delay : null }, 'jobs: attempt failed')
    this.#d.events.emit('job:failed', { id: row.id, name: row.name, attempt: row.attempts, error: error.message, retryInMs: retry ? delay : null })
    if (retry) this.#d.queue.wake(row.name, delay)
  }

  async #giveUp(row: ClaimRow): Promise<void> {
    const rows = await this.#persist(
      () => giveUpJob(this.#d.q, this.#s, { id: row.id, claimId: row.claim_id }),
    )
    const lastError = rows?.[0]?.last_error ?? 'its claimer went down'
    if (rows && rows.length > 0) this.#d.events.emit('job:failed', { id: row.id, name: row.name, attempt: row.attempts - 1, error: lastError, retryInMs: null })
  }

  /** Runs a write that must happen, retrying while this instance still owns the claim; null if it gave up. */
  #persist<T>(fn: () => Promise<T>): Promise<T | null> {
    const epoch = this.#d.members.self.epoch
    const p = (async () => {
      for (let attempt = 0; ; attempt++) {
        try {
          return await fn()
        } catch (err) {
          if (this.#state === 'closed' || this.#d.members.self.epoch !== epoch) return null
          this.#d.log.warn({ err: toError(err) }, 'jobs: could not record a job outcome; retrying')
          await sleep(reconnectDelayMs(attempt))
        }
      }
    })()
    this.#writes.add(p)
    void p.finally(() => this.#writes.delete(p))
    return p
  }

  // ---- handing back ---------------------------------------------------------------------------

  /** requeueClaims: jobs of a member declared down go back to the queue at once. */
  async #requeueMember(instanceId: string, epoch: number): Promise<void> {
    if (this.#state === 'closed') return
    try {
      const rows = await requeueMemberJobs(this.#d.q, this.#s, { instanceId, epoch })
      if (rows.length > 0) this.#requeued(rows, 'member-down', instanceId)
    } catch (err) {
      // The claim fallback hands them back on the next claim.
      this.#d.log.warn({ err: toError(err), member: instanceId }, 'jobs: could not hand back the jobs of a member that went down')
      this.#checkNextDue = true
    }
  }

  #requeued(rows: { id: string; name: string }[], reason: 'member-down' | 'claim-expired' | 'drain', from: string | null): void {
    this.#d.log.info({ jobs: rows.length, reason, from }, 'jobs: claims handed back to the queue')
    this.#d.events.emit('job:requeued', { ids: rows.map((r) => r.id), reason, from })
    // To every worker, this one included.
    this.#d.queue.publishWakes([...new Set(rows.map((r) => r.name))].map((n) => `w ${n} 0`))
  }

  /** Gives claims back without counting the attempt (drain, or a claim that arrived too late). */
  async #handBack(claimIds: string[], epoch: number): Promise<void> {
    try {
      const rows = await handBackJobs(this.#d.q, this.#s, { claimIds, instanceId: this.#d.instanceId, epoch })
      if (rows.length > 0) this.#requeued(rows, 'drain', this.#d.instanceId)
    } catch (err) {
      this.#d.log.warn({ err: toError(err), jobs: claimIds.length }, 'jobs: could not hand claims back; peers will when this instance leaves')
    }
  }

  /** Claims of this epoch that nothing here runs or records (a lost write): give them back. */
  async #handBackOrphans(): Promise<void> {
    if (!this.#canClaim() || this.#claiming || this.#completions.length > 0 || this.#writes.size > 0) return
    const epoch = this.#d.members.self.epoch
    try {
      const claims = await staleClaims(this.#d.q, this.#s, { instanceId: this.#d.instanceId, epoch })
      const buffered = new Set([...this.#defs.values()].flatMap((d) => d.buffer.map((x) => x.row.claim_id)))
      const orphans = claims.filter((c) => !this.#running.has(c) && !buffered.has(c))
      if (orphans.length > 0 && !this.#claiming && this.#completions.length === 0 && this.#writes.size === 0) await this.#handBack(orphans, epoch)
    } catch (err) {
      this.#d.log.debug({ err: toError(err) }, 'jobs: orphan check failed')
    }
  }

  /** Deletes completed and cancelled jobs past the retention (and so frees their dedupe keys). */
  async #sweep(): Promise<void> {
    if (this.#state !== 'running') return
    try {
      await sweepJobs(this.#d.q, this.#s, KEEP_FINISHED_MS)
    } catch (err) {
      this.#d.log.debug({ err: toError(err) }, 'jobs: sweep failed')
    }
  }
}

/** Resolves or rejects with `p`, or rejects with the signal's reason as soon as it aborts. */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    p.catch(() => undefined)
    return Promise.reject(signal.reason)
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort)
        resolve(v)
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort)
        reject(e)
      },
    )
  })
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
