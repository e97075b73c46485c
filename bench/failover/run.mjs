// Failover benchmark: how long after a `kill -9` the surviving members notice, measured over
// several trials on one embedded PostgreSQL. Each trial starts three fresh member processes with
// default settings, waits until every one lists all three, kills one at a random moment of its
// heartbeat cycle, and times each probe below from the kill, in every survivor.
//
//   node bench/failover/run.mjs [--trials 10] [--members 3] [--preset local] …
//   node bench/failover/run.mjs --help
//
// A probe is one column of the results: what to prepare before the kill, and the moment each
// survivor saw the effect: the member declared down, its exclusive lock acquired by a waiter, its
// running job started again elsewhere, its singleton started elsewhere.
import { fileURLToPath } from 'node:url'
import { loadavg } from 'node:os'
import { Child, fmt, machine, now, options, quantile, runMain, sleep, startDatabase, table } from '../lib/harness.mjs'

const MEMBER = fileURLToPath(new URL('./member.mjs', import.meta.url))

/**
 * @typedef {{ child: Child, id: string }} Member
 * @typedef {{ trial: number, victim: Member, survivors: Member[], timeoutMs: number }} TrialContext
 * @typedef {{
 *   id: string,
 *   title: string,
 *   arm?: (ctx: TrialContext) => Promise<void>,
 *   watch: (ctx: TrialContext, survivor: Member) => Promise<number>,
 * }} Probe
 * `arm` runs before the kill; `watch` is called before the kill too, and resolves with the time
 * (this machine's clock, ms) at which `survivor` saw the effect.
 */

/** @type {Probe[]} */
const probes = [
  {
    id: 'down',
    title: 'member:down',
    watch: async ({ victim, timeoutMs }, survivor) => {
      const msg = await survivor.child.waitFor((m) => m.type === 'member:down' && m.id === victim.id, timeoutMs, `member:down ${victim.id}`)
      if (msg.reason !== 'expired') throw new Error(`${survivor.id} saw ${victim.id} down with reason ${msg.reason}`)
      return msg.at
    },
  },
  {
    id: 'lock',
    title: 'lock free',
    // The victim holds an exclusive lock; both survivors wait for it. Each survivor's time is when
    // it got the lock (the second gets it right after the first releases it).
    arm: async ({ trial, victim, survivors }) => {
      const name = `failover:lock:${trial}`
      await victim.child.call({ cmd: 'lock', name, hold: true })
      await victim.child.waitFor((m) => m.type === 'lock-acquired' && m.name === name, 10_000, 'victim holds the lock')
      for (const s of survivors) await s.child.call({ cmd: 'lock', name, hold: false })
    },
    watch: async ({ trial, timeoutMs }, survivor) =>
      (await survivor.child.waitFor((m) => m.type === 'lock-acquired' && m.name === `failover:lock:${trial}`, timeoutMs, 'lock acquired')).at,
  },
  {
    id: 'job',
    title: 'job re-run',
    // The victim is running a job when it dies; the time is when a survivor starts it again (one
    // survivor runs it, so both columns show that moment).
    arm: async ({ trial, victim, survivors }) => {
      const name = `failover-job-${trial}`
      await victim.child.call({ cmd: 'defineJob', name })
      await victim.child.call({ cmd: 'enqueue', name })
      await victim.child.waitFor((m) => m.type === 'job-started' && m.name === name, 10_000, 'victim runs the job')
      for (const s of survivors) await s.child.call({ cmd: 'defineJob', name })
    },
    watch: async ({ trial, survivors, timeoutMs }) =>
      (await Promise.any(survivors.map((s) => s.child.waitFor((m) => m.type === 'job-started' && m.name === `failover-job-${trial}`, timeoutMs, 'job re-run')))).at,
  },
  {
    id: 'singleton',
    title: 'singleton taken over',
    arm: async ({ trial, victim, survivors }) => {
      const name = `failover-singleton-${trial}`
      await victim.child.call({ cmd: 'singleton', name })
      await victim.child.waitFor((m) => m.type === 'singleton-started' && m.name === name, 10_000, 'victim runs the singleton')
      for (const s of survivors) await s.child.call({ cmd: 'singleton', name })
    },
    watch: async ({ trial, survivors, timeoutMs }) =>
      (await Promise.any(survivors.map((s) => s.child.waitFor((m) => m.type === 'singleton-started' && m.name === `failover-singleton-${trial}`, timeoutMs, 'singleton taken over')))).at,
  },
]

const opts = options('BENCH_FAILOVER', {
  trials: 10,
  members: 3,
  preset: 'local', // the preset every member runs with (local: heartbeat 500 ms, failAfter 2500 ms)
  jitter: 1000, // ms: the kill comes at a uniformly random moment this long after all members see each other
  timeout: 15_000, // ms a probe may take before the trial counts it as missed
  deadline: 170_000, // ms before the whole run is stopped
  json: false, // also print the results as one JSON line
})
if (opts.members < 2) throw new Error('--members must be at least 2')

await runMain(
  async () => {
    const startLoad = loadavg()[0].toFixed(2)
    const db = await startDatabase()
    const trials = []
    let settings = null
    for (let t = 1; t <= opts.trials; t++) {
      const result = await trial(t, db.url)
      settings ??= result.settings
      trials.push(result)
      const cells = probes.map((p) => result.times[p.id].map((ms, i) => `${result.survivors[i]} ${ms === null ? 'missed' : `${fmt(ms)} ms`}`).join(', '))
      process.stderr.write(`trial ${t}: killed ${result.victim}; ${probes.map((p, i) => `${p.title}: ${cells[i]}`).join('; ')}\n`)
    }
    report(trials, settings, `${await db.describe()}\n${machine()} at the end (1-minute load ${startLoad} at the start)`)
  },
  { deadlineMs: opts.deadline },
)

async function trial(n, url) {
  const ids = Array.from({ length: opts.members }, (_, i) => `t${String(n).padStart(2, '0')}-${String.fromCharCode(97 + i)}`)
  const env = { DATABASE_URL: url, CHORUS_PRESET: opts.preset, CHORUS_LOG_LEVEL: 'error' }
  /** @type {Member[]} */
  const members = ids.map((id) => ({ id, child: new Child(MEMBER, [], { ...env, CHORUS_INSTANCE_ID: id }) }))
  try {
    // Every member must list every member (itself included) before the kill.
    const started = (m) => {
      if (m.type === 'start-failed') throw new Error(`a member failed to start: ${m.message}`)
      return m
    }
    const seen = members.map(() => new Set())
    const allSee = Promise.all(
      members.map(({ child }, i) =>
        child
          .waitFor(
            (m) => {
              if (m.type === 'member:up') seen[i].add(m.id)
              return m.type === 'start-failed' || ids.every((id) => seen[i].has(id))
            },
            30_000,
            'every member up',
          )
          .then(started),
      ),
    )
    allSee.catch(() => undefined) // awaited below; a failure to start is reported there
    const ready = await Promise.all(members.map(({ child }) => child.waitFor((m) => m.type === 'ready' || m.type === 'start-failed', 30_000, 'ready').then(started)))
    await allSee
    await sleep(Math.random() * opts.jitter)

    const victim = members[(n - 1) % members.length]
    const survivors = members.filter((m) => m !== victim)
    const ctx = { trial: n, victim, survivors, timeoutMs: opts.timeout }
    for (const p of probes) await p.arm?.(ctx)
    const watching = probes.map((p) => survivors.map((s) => p.watch(ctx, s).catch(() => null)))
    const killedAt = now()
    victim.child.kill('SIGKILL')
    const times = {}
    for (const [i, p] of probes.entries()) {
      times[p.id] = (await Promise.all(watching[i])).map((at) => (at === null ? null : at - killedAt))
    }
    const { heartbeatMs, failAfterMs, preset } = ready[0]
    return { trial: n, victim: victim.id, survivors: survivors.map((s) => s.id), times, settings: { heartbeatMs, failAfterMs, preset } }
  } finally {
    await Promise.all(members.map(({ child }) => child.stop()))
  }
}

function report(trials, settings, environment) {
  const survivorCount = opts.members - 1
  process.stdout.write(
    `\nFailover benchmark: ${trials.length} trials of ${opts.members} member processes on one embedded PostgreSQL (127.0.0.1), ` +
      `preset ${settings?.preset} (heartbeat ${settings?.heartbeatMs} ms, failAfter ${settings?.failAfterMs} ms); one member killed with SIGKILL per trial.\n` +
      `${environment}\nTimes are ms from the kill to the moment each survivor saw the effect.\n\n`,
  )
  const headers = ['trial', 'killed']
  for (const p of probes) {
    for (let i = 0; i < survivorCount; i++) headers.push(`${p.title} #${i + 1}`)
    headers.push(`${p.title} all`)
  }
  const rows = trials.map((t) => {
    const row = [t.trial, t.victim]
    for (const p of probes) {
      const times = t.times[p.id]
      for (const ms of times) row.push(ms === null ? 'missed' : fmt(ms))
      row.push(times.includes(null) ? 'missed' : fmt(Math.max(...times)))
    }
    return row
  })
  process.stdout.write(table(headers, rows) + '\n')
  process.stdout.write(`(#1…#${survivorCount}: each survivor, in member order; all: when the last survivor saw it)\n\n`)

  const summary = []
  const stats = (values) => {
    const sorted = values.filter((v) => v !== null).sort((a, b) => a - b)
    return { n: sorted.length, missed: values.length - sorted.length, min: sorted[0], median: quantile(sorted, 0.5), p90: quantile(sorted, 0.9), max: sorted[sorted.length - 1] }
  }
  const summaryRows = []
  for (const p of probes) {
    const each = stats(trials.flatMap((t) => t.times[p.id]))
    const all = stats(trials.map((t) => (t.times[p.id].includes(null) ? null : Math.max(...t.times[p.id]))))
    summary.push({ probe: p.id, each, all })
    summaryRows.push([`${p.title}, each survivor`, each.n, each.missed, fmt(each.min), fmt(each.median), fmt(each.p90), fmt(each.max)])
    summaryRows.push([`${p.title}, all survivors`, all.n, all.missed, fmt(all.min), fmt(all.median), fmt(all.p90), fmt(all.max)])
  }
  process.stdout.write(table(['probe', 'samples', 'missed', 'min ms', 'median ms', 'p90 ms', 'max ms'], summaryRows) + '\n')
  const down = summary.find((s) => s.probe === 'down')
  if (down) {
    process.stdout.write(`\nkill -9 → member:down: median ${fmt(down.each.median)} ms, p90 ${fmt(down.each.p90)} ms over ${down.each.n} observations in ${trials.length} trials (goal: median ≤ 3,000 ms: ${down.each.median <= 3000 ? 'met' : 'NOT met'})\n`)
  }
  if (opts.json) process.stdout.write(JSON.stringify({ options: opts, settings, trials, summary }) + '\n')
}
