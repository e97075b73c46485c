/**
 * The consuming side of the job queue, on one instance: the definitions it runs, the wake-ups it
 * listens to, and its lifecycle. Claiming (claim.ts), running (run.ts), recording outcomes
 * (complete.ts) and handing claims back (handback.ts) are its parts. A claim carries this
 * instance's epoch and a claim id unique across all claims: every outcome matches that claim id,
 * so a job handed back meanwhile (its claimer declared down) is never completed by the old claim.
 */
import type { Logger } from 'pino'
import type { Bus } from '../bus/bus.js'
import { channels } from '../bus/channels.js'
import type { Sql } from '../db/connect.js'
import { schemaName, sequenceName, type SchemaName } from '../db/schema.js'
import { ChorusError, toError } from '../errors.js'
import type { Events } from '../events.js'
import type { Membership } from '../membership/membership.js'
import { untilAborted } from '../util/abort.js'
import { Machine, type Transitions } from '../util/machine.js'
import { Claimer } from './claim.js'
import { Outcomes } from './complete.js'
import { dropBuffered, markBacklog, newDefinition, takeBuffered, type Definition } from './definition.js'
import { HandBack } from './handback.js'
import { checkName, DRAIN_GRACE_MS, SAFETY_POLL_MS, SWEEP_EVERY_MS } from './limits.js'
import { checkDefineOptions } from './options.js'
import type { Queue } from './queue.js'
import { Runner } from './run.js'
import { staleClaims } from './sql/staleClaims.js'
import { mark, markTime, tracing } from './trace.js'
import type { DefineOptions, JobHandler } from './types.js'

/**
 * The worker's states, and the states each may be entered from:
 * - `running`: claiming and running jobs.
 * - `draining`: claims nothing new; running handlers finish within the grace period, then what is left is handed back.
 * - `closed`: nothing runs; claims left were handed back.
 */
export const workerEnteredFrom = {
  running: [],
  draining: ['running'],
  closed: ['draining'],
} as const satisfies Transitions<WorkerState>

export type WorkerState = 'running' | 'draining' | 'closed'

/** The worker's state machine (exported for its unit test). */
export function workerMachine(): Machine<WorkerState> {
  return new Machine<WorkerState>('jobs worker', workerEnteredFrom, 'running')
}

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
  readonly #machine = workerMachine()
  readonly #defs = new Map<string, Definition>()
  readonly #outcomes: Outcomes
  readonly #handBack: HandBack
  readonly #runner: Runner
  readonly #claimer: Claimer
  #pollTimer: NodeJS.Timeout | null = null
  #sweepTimer: NodeJS.Timeout | null = null
  readonly #offs: (() => void)[] = []
  #signal: AbortSignal | null = null

  constructor(deps: WorkerDeps) {
    this.#d = deps
    const s = (this.#s = schemaName(deps.q, deps.schema))
    const { q, queue, events, log, members, instanceId } = deps
    const running = () => this.#machine.is('running')
    this.#outcomes = new Outcomes({ q, s, queue, events, log, members, closed: () => this.#machine.is('closed') })
    this.#handBack = new HandBack({ q, s, queue, events, log, instanceId })
    this.#runner = new Runner({ sql: deps.sql, s, events, members, outcomes: this.#outcomes, running, claimMore: () => this.#claimer.poke() })
    this.#claimer = new Claimer({
      q,
      s,
      log,
      members,
      instanceId,
      claimSeq: sequenceName(deps.schema, 'job_claims'),
      defs: this.#defs,
      runner: this.#runner,
      handBack: this.#handBack,
      running,
    })
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
    if (!this.#machine.is('running')) throw new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', [this.#machine.state, 'define a job'])
    const checked = checkDefineOptions(opts, internal ? { retries: 0 } : undefined)
    const def = newDefinition(name, handler, checked, this.#d.roles)
    this.#defs.set(name, def)
    if (!def.eligible) this.#d.log.info({ job: name, roles: checked.roles }, 'defined, but this instance has none of its roles; it will not run here')
    this.#claimer.lookAhead()
    this.#claimer.poke()
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
      bus.subscribe(channels.jobs, (data, meta) => {
        if (!meta.local) this.#onMessage(data)
      }),
      members.on('member:down', ({ member }) => void this.#requeueMember(member.instanceId, member.epoch)),
      members.on('member:self:rejoined', () => {
        this.#watchSignal()
        this.#claimer.wakeAll()
      }),
      events.on('bus:gap', () => this.#claimer.wakeAll()),
    )
    this.#watchSignal()
    this.#schedulePoll()
    this.#sweepTimer = setInterval(() => {
      if (this.#machine.is('running')) void this.#handBack.sweep()
    }, SWEEP_EVERY_MS)
    this.#sweepTimer.unref()
  }

  /** Stops claiming, lets running handlers finish within the grace period, then hands back what is left. */
  async drain(graceMs = DRAIN_GRACE_MS): Promise<void> {
    if (!this.#machine.is('running')) return
    this.#machine.to('draining')
    this.#stopTimers()
    const buffered = takeBuffered(this.#defs.values())
    if (buffered.length > 0) await this.#handBack.claims(buffered.map((b) => b.row.claim_id), buffered[0]!.epoch)
    // Whichever first: every handler finished, or the grace period is over.
    await untilAborted(this.#runner.idle(), AbortSignal.timeout(Math.max(0, Math.ceil(graceMs)))).catch(() => undefined)
    const left = this.#runner.claimIds()
    const epoch = this.#d.members.self.epoch
    this.#runner.abortAll(new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', ['draining', 'running this job']))
    await this.#outcomes.flushAll()
    if (left.length > 0) await this.#handBack.claims(left, epoch)
  }

  async close(): Promise<void> {
    await this.drain()
    this.#machine.to('closed')
    this.#stopTimers()
    if (this.#sweepTimer) clearInterval(this.#sweepTimer)
    for (const off of this.#offs.splice(0)) off()
  }

  #stopTimers(): void {
    this.#claimer.stop()
    if (this.#pollTimer) clearTimeout(this.#pollTimer)
    this.#pollTimer = null
  }

  /** Isolation aborts every running handler: its claim may pass to another instance. */
  #watchSignal(): void {
    const signal = this.#d.members.signal
    if (signal === this.#signal) return
    this.#signal = signal
    const onAbort = () => {
      // Peers hand these claims back once they see this instance down.
      takeBuffered(this.#defs.values())
      this.#runner.abortAll(signal.reason)
    }
    if (signal.aborted) onAbort()
    else signal.addEventListener('abort', onAbort, { once: true })
  }

  /** Wake-ups (`w <name> <due in ms>`) and cancellations (`c <id>`), one per line. */
  #onMessage(data: string): void {
    if (tracing()) mark({ stage: 'wake-received', at: markTime() })
    for (const line of data.split('\n')) {
      const [kind, a, b] = line.split(' ')
      if (kind === 'w' && a !== undefined) {
        const def = this.#defs.get(a)
        if (!def?.eligible) continue
        const due = Number(b)
        if (!(due > 0)) {
          markBacklog(def)
          this.#claimer.poke()
        } else {
          this.#claimer.setDue(due)
        }
      } else if (kind === 'c' && a !== undefined) {
        dropBuffered(this.#defs.values(), a)
        this.#runner.abort(a, new ChorusError('CHORUS_ERR_JOB_CANCELLED', [a]))
      }
    }
  }

  #schedulePoll(): void {
    if (!this.#machine.is('running')) return
    // Jittered, so instances do not poll in step.
    this.#pollTimer = setTimeout(() => {
      this.#claimer.wakeAll()
      void this.#handBackOrphans()
      this.#schedulePoll()
    }, SAFETY_POLL_MS * (0.8 + 0.4 * Math.random()))
    this.#pollTimer.unref()
  }

  async #requeueMember(instanceId: string, epoch: number): Promise<void> {
    if (this.#machine.is('closed')) return
    // On failure the claim fallback hands them back: a wake-all makes the next round do it.
    if (!(await this.#handBack.member(instanceId, epoch))) this.#claimer.wakeAll()
  }

  /** Claims of this epoch that nothing here runs or records (a lost write): give them back. */
  async #handBackOrphans(): Promise<void> {
    const quiet = () => this.#claimer.canClaim() && !this.#claimer.claiming && this.#outcomes.idle
    if (!quiet()) return
    const epoch = this.#d.members.self.epoch
    try {
      const claims = await staleClaims(this.#d.q, this.#s, { instanceId: this.#d.instanceId, epoch })
      const buffered = new Set([...this.#defs.values()].flatMap((d) => d.buffer.map((x) => x.row.claim_id)))
      const orphans = claims.filter((c) => !this.#runner.has(c) && !buffered.has(c))
      if (orphans.length > 0 && quiet()) await this.#handBack.claims(orphans, epoch)
    } catch (err) {
      this.#d.log.debug({ err: toError(err) }, 'orphan check failed')
    }
  }
}
