// The chaos schedule: which instances are killed (kill -9) when, and when PostgreSQL is restarted for
// how long — drawn up front from one seed, so a run can be replayed with `--seed`.

/**
 * mulberry32: a 32-bit seeded generator, small enough to keep here rather than add a dependency for
 * one schedule. Returns floats in [0, 1).
 */
export function seeded(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * Events over `seconds` (times in seconds from the start of the chaos):
 * - `kill`: kill -9 of one instance, or of two at once (about one time in three), every 10–20 s;
 *   each comes back after 0.5–3 s.
 * - `pg-restart`: PostgreSQL stopped, down for 2–6 s, started again. One per 40 s slice (at least
 *   two), placed in the middle of its slice so that each recovery is seen before the next restart
 *   and before the end. With `crash`, every other one is a crash (immediate shutdown: no checkpoint,
 *   recovery from the WAL at start, unlogged tables emptied).
 */
export function makePlan(seed, seconds, instances, { crash = false } = {}) {
  const rnd = seeded(seed)
  const within = (lo, hi) => lo + rnd() * (hi - lo)
  const events = []
  for (let at = within(8, 15); at < seconds - 3; at += within(10, 20)) {
    const first = Math.floor(rnd() * instances)
    const victims = [first]
    if (instances > 1 && rnd() < 1 / 3) victims.push((first + 1 + Math.floor(rnd() * (instances - 1))) % instances)
    events.push({ at, kind: 'kill', victims, backAfter: victims.map(() => within(0.5, 3)) })
  }
  const restarts = Math.max(2, Math.floor(seconds / 40))
  const slice = seconds / restarts
  for (let i = 0; i < restarts; i++) {
    const at = i * slice + within(0.3, 0.55) * slice
    const downFor = within(2, 6)
    // With `crash`, every other restart (the first included) is an immediate shutdown instead.
    events.push({ at, kind: 'pg-restart', downFor, crash: crash && i % 2 === 0 })
  }
  return events.sort((a, b) => a.at - b.at)
}

export function describeEvent(e) {
  if (e.kind === 'kill') return `kill -9 ${e.victims.map((v, i) => `instance ${v + 1} (back after ${e.backAfter[i].toFixed(1)} s)`).join(' and ')}`
  return `${e.crash ? 'crash' : 'restart'} PostgreSQL (down ${e.downFor.toFixed(1)} s)`
}
