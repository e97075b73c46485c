/**
 * The state sweep: removes expired map entries, reliable-topic messages past their retention and
 * expired sessions, and folds the counter shards of departed instances — across state/ and sessions/, so it lives above both. It must run on one instance at a time, cluster-wide (the cluster schedules it
 * as a cron job when the jobs subsystem is present); every part is idempotent, so a sweep that
 * runs twice removes nothing twice.
 */
import type { Sql } from './db/connect.js'
import { sweepSessions } from './sessions/sessions.js'
import { foldCounterShards } from './state/counter.js'
import { sweepExpired } from './state/map.js'
import { sweepReliableTopics } from './state/reliable-topic.js'

export interface SweepResult {
  readonly mapEntries: number
  readonly topicMessages: number
  readonly sessions: number
  readonly counterShards: number
}

/** Name and schedule of the cron job that runs `sweepState` (every minute). */
export const STATE_SWEEP_CRON = { name: 'chorus.state.sweep', spec: '* * * * *' } as const

/** `schema`: the Chorus schema (default `chorus`). */
export async function sweepState(sql: Sql, schema = 'chorus'): Promise<SweepResult> {
  const batch = 5000
  let mapEntries = 0
  for (;;) {
    const n = await sweepExpired(sql, schema, batch)
    mapEntries += n
    if (n < batch) break
  }
  const topicMessages = await sweepReliableTopics(sql, schema)
  const sessions = await sweepSessions(sql, schema)
  const counterShards = await foldCounterShards(sql, schema)
  return { mapEntries, topicMessages, sessions, counterShards }
}

/** Schedules the state sweep on the jobs subsystem: one run per minute, cluster-wide. */
export function scheduleStateSweep(jobs: { cron(name: string, spec: string, handler: () => unknown): void }, sql: Sql, schema = 'chorus'): void {
  jobs.cron(STATE_SWEEP_CRON.name, STATE_SWEEP_CRON.spec, () => sweepState(sql, schema))
}
