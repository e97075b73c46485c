/**
 * The one reconnect policy: every client and every subsystem loop that waits for PostgreSQL to
 * come back retries on this bounded, jittered backoff, so that once the database answers again
 * everything succeeds within about a second (the cap plus one attempt), without a thundering herd.
 */

/** First delay, and the cap every later delay grows to (doubling). */
export const RECONNECT_BASE_MS = 50
export const RECONNECT_CAP_MS = 500

/** Delay before attempt `attempt` (0 for the first retry): 50 ms doubling to 500 ms, jittered to 50–100 % of that. */
export function reconnectDelayMs(attempt: number): number {
  const ceiling = Math.min(RECONNECT_CAP_MS, RECONNECT_BASE_MS * 2 ** Math.max(0, Math.min(attempt, 16)))
  return ceiling * (0.5 + Math.random() / 2)
}
