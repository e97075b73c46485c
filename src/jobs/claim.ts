/**
 * Claiming: one claim round at a time asks for up to `room` due jobs of every definition with a
 * backlog, in one statement (claimJobs, `for update skip locked`, batched per name), buffers them
 * by definition and starts what has free slots. A wake-up that comes during a round runs one more
 * round after it (a coalesced rerun), and keeps its definition's backlog even when the claim in
 * flight found fewer jobs than it asked for: that job may have committed after the claim's
 * snapshot. When nothing more is due now, a timer is set for the next job not yet due; a round that
 * fails is retried on the reconnect backoff.
 */
import { performance } from 'node:perf_hooks'
import type { Logger } from 'pino'
import { reconnectDelayMs } from '../db/backoff.js'
import type { Sql } from '../db/connect.js'
import type { SchemaName } from '../db/schema.js'
import { toError } from '../errors.js'
import type { Membership } from '../membership/membership.js'
import { Rerun } from '../util/rerun.js'
import { markBacklog, room, type Definition } from './definition.js'
import type { HandBack } from './handback.js'
import type { Runner } from './run.js'
import { claimJobs } from './sql/claimJobs.js'
import { nextDue } from './sql/nextDue.js'
import { mark, markTime, tracing } from './trace.js'

export interface ClaimerDeps {
  /** The queue's own connections. */
  q: Sql
  s: SchemaName
  log: Logger
  members: Membership
  instanceId: string
  /** The claim id sequence, as `sequenceName(schema, 'job_claims')`. */
  claimSeq: string
  defs: ReadonlyMap<string, Definition>
  runner: Runner
  handBack: HandBack
  /** The worker is running (not draining or closed). */
  running(): boolean
}

export class Claimer {
  readonly #d: ClaimerDeps
  readonly #rounds: Rerun
  #checkNextDue = true
  /**
   * The next round also hands back claims of epochs no longer live: the first round, and rounds
   * after a wake-all (the safety poll, a timer, a gap, a rejoin, a failed round). Not every round:
   * that scan reads every running job, and `member:down` hands those claims back first anyway.
   */
  #handBackDead = true
  #dueTimer: NodeJS.Timeout | null = null
  #dueAt = Number.POSITIVE_INFINITY
  #retryTimer: NodeJS.Timeout | null = null
  /** Claim rounds failed in a row (a database that does not answer); the retry backs off on it. */
  #failures = 0

  constructor(deps: ClaimerDeps) {
    this.#d = deps
    // A round catches its own errors; this only guards against a bug.
    this.#rounds = new Rerun(
      () => this.#round(),
      (err) => deps.log.error({ err: toError(err) }, 'claim round failed'),
    )
  }

  /** A claim round is in flight. */
  get claiming(): boolean {
    return this.#rounds.running
  }

  /** May this instance claim now: the worker runs and this instance is up. */
  canClaim(): boolean {
    return this.#d.running() && this.#d.members.self.state === 'up'
  }

  /** Claims now, or once more after the round in flight. */
  poke(): void {
    if (!this.#d.running()) return
    void this.#rounds.run()
  }

  /** Every eligible definition may have due jobs (a gap, a rejoin, a timer): claim, and look for the next due job again. */
  wakeAll(): void {
    for (const def of this.#d.defs.values()) if (def.eligible) markBacklog(def)
    this.#checkNextDue = true
    this.#handBackDead = true
    this.poke()
  }

  /** Looks for the next job not yet due after the next round (a new definition, a lost hand-back). */
  lookAhead(): void {
    this.#checkNextDue = true
  }

  /** Wakes every definition in `inMs` (or sooner, if already set sooner). */
  setDue(inMs: number): void {
    if (!this.#d.running()) return
    const at = performance.now() + inMs
    if (this.#dueTimer && at >= this.#dueAt) return
    if (this.#dueTimer) clearTimeout(this.#dueTimer)
    this.#dueAt = at
    this.#dueTimer = setTimeout(() => {
      this.#dueTimer = null
      this.#dueAt = Number.POSITIVE_INFINITY
      this.wakeAll()
    }, Math.min(inMs, 2 ** 31 - 1))
    this.#dueTimer.unref()
  }

  stop(): void {
    for (const t of [this.#dueTimer, this.#retryTimer]) if (t) clearTimeout(t)
    this.#dueTimer = this.#retryTimer = null
    this.#dueAt = Number.POSITIVE_INFINITY
  }

  async #round(): Promise<void> {
    const { defs, members, runner, handBack, log } = this.#d
    try {
      for (;;) {
        if (!this.canClaim()) return
        const wanted = [...defs.values()].filter((d) => d.eligible && d.backlog && room(d) > 0)
        if (wanted.length === 0) break
        const counts = wanted.map(room)
        const seqs = wanted.map((d) => d.backlogSeq)
        const epoch = members.self.epoch
        const t0 = performance.now()
        const issuedAt = tracing() ? markTime() : 0
        if (issuedAt > 0) mark({ stage: 'claim-issued', at: issuedAt })
        const handBackDead = this.#handBackDead
        this.#handBackDead = false
        const rows = await claimJobs(this.#d.q, this.#d.s, { names: wanted.map((d) => d.name), counts, instanceId: this.#d.instanceId, epoch, claimSeq: this.#d.claimSeq, handBackDead })
        const claimed = rows.filter((r) => !r.requeued)
        if (issuedAt > 0) mark({ stage: 'claim-returned', at: markTime(), issuedAt, ids: claimed.map((r) => r.id) })
        log.trace({ ms: performance.now() - t0, asked: counts, got: claimed.length }, 'claimed')
        const requeued = rows.filter((r) => r.requeued)
        if (!this.canClaim() || members.self.epoch !== epoch) {
          if (claimed.length > 0) await handBack.claims(claimed.map((r) => r.claim_id), epoch)
          return
        }
        const got = new Map<string, number>()
        for (const r of claimed) {
          got.set(r.name, (got.get(r.name) ?? 0) + 1)
          defs.get(r.name)!.buffer.push({ row: r, epoch })
        }
        for (const d of wanted) runner.dispatch(d)
        // Fewer than asked: nothing more is due, unless a wake-up came meanwhile (its job may have
        // committed after this claim's snapshot).
        wanted.forEach((d, i) => {
          if ((got.get(d.name) ?? 0) < counts[i]! && d.backlogSeq === seqs[i]) d.backlog = false
        })
        if (requeued.length > 0) handBack.requeued(requeued, 'claim-expired', null)
        if (!wanted.some((d) => d.backlog && room(d) > 0)) break
      }
      if (this.#checkNextDue && this.canClaim()) {
        this.#checkNextDue = false
        await this.#nextDue()
      }
      this.#failures = 0
    } catch (err) {
      if (!this.#d.running()) return
      const delay = reconnectDelayMs(this.#failures++)
      // Once per run of failures at warn: a database that is away fails every retry.
      log[this.#failures === 1 ? 'warn' : 'debug']({ err: toError(err), retryInMs: Math.round(delay) }, 'claiming failed; trying again')
      this.#checkNextDue = true
      this.#handBackDead = true
      if (this.#retryTimer) clearTimeout(this.#retryTimer)
      this.#retryTimer = setTimeout(() => this.wakeAll(), delay)
      this.#retryTimer.unref()
    }
  }

  /** Sets the timer for the next job not yet due. */
  async #nextDue(): Promise<void> {
    const names = [...this.#d.defs.values()].filter((d) => d.eligible).map((d) => d.name)
    if (names.length === 0) return
    const due = await nextDue(this.#d.q, this.#d.s, names)
    if (due === null) return
    // Due already but not claimed: claimed meanwhile elsewhere, or every slot is busy; look again soon.
    this.setDue(due > 0 ? due : 250)
  }
}
