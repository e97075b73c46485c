/**
 * A job definition as this instance holds it: the checked options of `define`, whether it may run
 * here (by role), and its claim bookkeeping — how many of its jobs run, which are claimed ahead,
 * and how fast its handler is (fast jobs are claimed ahead of free slots, so a slot never waits
 * for a round trip).
 */
import { CLAIM_BATCH } from './limits.js'
import type { CheckedDefine } from './options.js'
import type { ClaimRow } from './sql/claimJobs.js'
import type { JobHandler } from './types.js'

/** A job claimed by this instance's `epoch`. */
export interface Claimed {
  readonly row: ClaimRow
  readonly epoch: number
}

export interface Definition extends CheckedDefine {
  readonly name: string
  readonly handler: JobHandler
  /** This instance has one of the roles (or the job needs none). */
  readonly eligible: boolean
  running: number
  /** Due jobs of this name may be waiting. */
  backlog: boolean
  /**
   * Counts the times `backlog` was set (`markBacklog`): a claim that found fewer jobs than it asked
   * for clears `backlog` only if no wake-up came while it ran, since the job announced then may have
   * committed after the claim's snapshot.
   */
  backlogSeq: number
  /** Claimed here, not yet started (prefetched for fast jobs). */
  buffer: Claimed[]
  /** Recent handler duration (moving average), ms; prefetching is for fast jobs only. */
  avgMs: number
}

/** Jobs whose handlers take less than this on average are claimed ahead of free slots. */
const FAST_JOB_MS = 5
/** A fast job's definition may hold this many times its concurrency claimed ahead (at most CLAIM_BATCH). */
const PREFETCH_FACTOR = 4

export function newDefinition(name: string, handler: JobHandler, checked: CheckedDefine, roles: readonly string[]): Definition {
  const eligible = checked.roles.length === 0 || checked.roles.some((r) => roles.includes(r))
  return { ...checked, name, handler, eligible, running: 0, backlog: true, backlogSeq: 0, buffer: [], avgMs: Number.POSITIVE_INFINITY }
}

/** Jobs of `d` this instance may hold claimed at once: its concurrency, plus a prefetch when its jobs are fast. */
function capacity(d: Definition): number {
  return d.concurrency + (d.avgMs < FAST_JOB_MS ? Math.min(CLAIM_BATCH, PREFETCH_FACTOR * d.concurrency) : 0)
}

/** How many more jobs of `d` one claim may take now. */
export function room(d: Definition): number {
  return Math.min(CLAIM_BATCH, capacity(d) - d.running - d.buffer.length)
}

/** Jobs of `d` may be due (a wake-up, a timer, a gap): the next claim round asks for them. */
export function markBacklog(d: Definition): void {
  d.backlog = true
  d.backlogSeq++
}

/** Records a finished run's duration in the moving average. */
export function recordDuration(d: Definition, ms: number): void {
  d.avgMs = Number.isFinite(d.avgMs) ? 0.8 * d.avgMs + 0.2 * ms : ms
}

/** Empties every definition's buffer and returns what it held. */
export function takeBuffered(defs: Iterable<Definition>): Claimed[] {
  const all: Claimed[] = []
  for (const d of defs) all.push(...d.buffer.splice(0))
  return all
}

/** Drops the buffered claim of job `id`, wherever it is. */
export function dropBuffered(defs: Iterable<Definition>, id: string): void {
  for (const d of defs) {
    const i = d.buffer.findIndex((b) => b.row.id === id)
    if (i >= 0) d.buffer.splice(i, 1)
  }
}
