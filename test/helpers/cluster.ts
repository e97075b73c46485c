// In-process cluster members for integration tests, and a way to wait for what they report.
import type { Cluster } from '../../src/cluster.js'
import { createCluster } from '../../src/create.js'
import type { ClusterEvents, EventName } from '../../src/events.js'
import type { ClusterOptions } from '../../src/options.js'

export const secret = 'integration-test-secret-0123'

/** Joins a cluster on `url` with the local preset, silent logs and a fixed secret. */
export function member(url: string, instanceId: string, extra: ClusterOptions = {}): Promise<Cluster> {
  return createCluster({ databaseUrl: url, instanceId, preset: 'local', secret, logLevel: 'silent', ...extra })
}

/** Records every payload of `event` emitted by `cluster`, with the time it was seen. */
export function record<E extends EventName>(cluster: Cluster, event: E): (ClusterEvents[E] & { at: number })[] {
  const seen: (ClusterEvents[E] & { at: number })[] = []
  cluster.on(event, (payload) => void seen.push({ ...payload, at: Date.now() }))
  return seen
}

/** Polls `check` until it returns a truthy value; fails with `what` after `timeoutMs`. */
export async function eventually<T>(check: () => T | Promise<T>, what: string, timeoutMs = 10_000, everyMs = 20): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value as NonNullable<T>
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, everyMs))
  }
}
