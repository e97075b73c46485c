/**
 * Timing marks of the path from an enqueue to a handler's start, on the diagnostics channel
 * `chorus:jobs` (node:diagnostics_channel): `wake-sent` (a wake-up handed to the bus after the
 * enqueue committed), `wake-notified` (the bus sent it), `wake-received` (a worker got it),
 * `claim-issued` and `claim-returned` (a claim round's statement, with the claimed job ids). Each
 * mark carries `at`, epoch milliseconds with sub-millisecond precision. Nothing is built or
 * published while nobody subscribes, so the marks cost nothing in normal running; benchmarks and
 * diagnostics subscribe.
 */
import { channel } from 'node:diagnostics_channel'
import { performance } from 'node:perf_hooks'

export type JobsMark =
  | { stage: 'wake-sent' | 'wake-notified' | 'wake-received'; at: number }
  | { stage: 'claim-issued'; at: number }
  | { stage: 'claim-returned'; at: number; issuedAt: number; ids: string[] }

const marks = channel('chorus:jobs')

/** Whether anyone listens (check before building a mark's data). */
export function tracing(): boolean {
  return marks.hasSubscribers
}

/** Epoch milliseconds, sub-millisecond. */
export function markTime(): number {
  return performance.timeOrigin + performance.now()
}

export function mark(m: JobsMark): void {
  if (marks.hasSubscribers) marks.publish(m)
}
