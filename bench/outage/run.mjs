// Outage benchmark: how soon every subsystem works again after PostgreSQL comes back. It runs an
// embedded PostgreSQL, `--instances` cluster members (bench/outage/instance.mjs) that keep every
// subsystem under steady load, a dashboard process, and a STOMP subscriber on each instance; then,
// per trial, stops PostgreSQL for `--down-seconds`, starts it again, and times each subsystem's
// first success from the moment PostgreSQL accepts connections again (a fresh client's first `select 1`).
//
//   node bench/outage/run.mjs [--trials 3] [--down-seconds 10] [--instances 2] [--preset lan] …
//   node bench/outage/run.mjs --help
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Client as StompClient } from '@stomp/stompjs'
import postgres from 'postgres'
import { WebSocket } from 'ws'
import { startEmbeddedPostgres } from '../../dist/db/embedded.js'
import { Child, fmt, machine, now, onCleanup, options, quantile, runMain, sleep, table } from '../lib/harness.mjs'

const INSTANCE = fileURLToPath(new URL('./instance.mjs', import.meta.url))
const DASHBOARD = fileURLToPath(new URL('./dashboard.mjs', import.meta.url))
const TOPIC = '/topic/outage'
const GOAL_MS = 1000

const opts = options('BENCH_OUTAGE', {
  trials: 3,
  'down-seconds': 10, // how long PostgreSQL stays stopped in each trial
  instances: 2,
  preset: 'lan', // the members' preset (lan: heartbeat 1000 ms, failAfter 5000 ms; local: 500/2500 ms)
  'stop-mode': 'fast', // fast: PostgreSQL's fast shutdown (SIGINT); immediate: SIGQUIT, crash recovery at the restart
  interval: 100, // ms between attempts of each load loop, on each instance
  'in-flight': 20, // most unfinished attempts per loop; a tick finding that many skips its attempt (so an overloaded machine is not buried in a backlog)
  warmup: 3000, // ms of load before each stop, at least; the stop waits until every probe succeeds
  'warmup-max': 30_000, // ms after which the stop comes even if some probe does not succeed yet
  observe: 30_000, // ms after PostgreSQL accepts connections that a subsystem may take before it counts as not recovered
  deadline: 300_000, // ms before the whole run is stopped
  detail: false, // also print each trial's time per instance, when each isolated, rejoined, lost and regained the bus, and what the backends did after the restart
  json: false, // also print the results as one JSON line
})
if (opts.instances < 2) throw new Error('--instances must be at least 2 (cross-instance paths need a peer)')
if (!['fast', 'immediate'].includes(opts['stop-mode'])) throw new Error('--stop-mode must be fast or immediate')

/**
 * One row of the results. `source`: which recorder has it (every `instance`, the `stomp`
 * subscribers (one per instance), or the `dashboard`). `scope`: `each` — recovered when it has
 * succeeded on every source; `any` — cluster-wide work that one instance does (a job, a cron tick,
 * the singleton), recovered at its first success anywhere.
 * @typedef {{ subsystem: string, probe: string, what: string, source: 'instance' | 'stomp' | 'dashboard', scope: 'each' | 'any' }} Probe
 */
/** @type {Probe[]} */
const PROBES = [
  { subsystem: 'membership', probe: 'membership', what: 'a member again (state up)', source: 'instance', scope: 'each' },
  { subsystem: 'bus', probe: 'bus:publish', what: 'publish resolves', source: 'instance', scope: 'each' },
  { subsystem: 'bus', probe: 'bus:deliver', what: "a peer's message arrives", source: 'instance', scope: 'each' },
  { subsystem: 'locks', probe: 'locks', what: 'acquire + release', source: 'instance', scope: 'each' },
  { subsystem: 'jobs', probe: 'jobs:enqueue', what: 'enqueue', source: 'instance', scope: 'each' },
  { subsystem: 'jobs', probe: 'jobs:run', what: 'a job starts', source: 'instance', scope: 'any' },
  { subsystem: 'cron', probe: 'cron', what: 'a tick runs (every second)', source: 'instance', scope: 'any' },
  { subsystem: 'singletons', probe: 'singleton', what: 'held somewhere', source: 'instance', scope: 'any' },
  { subsystem: 'map', probe: 'map', what: 'increment', source: 'instance', scope: 'each' },
  { subsystem: 'cache', probe: 'cache:set', what: 'set (invalidation sent)', source: 'instance', scope: 'each' },
  { subsystem: 'cache', probe: 'cache:invalidate', what: "a peer's invalidation arrives", source: 'instance', scope: 'each' },
  { subsystem: 'topics', probe: 'topic:publish', what: 'publish', source: 'instance', scope: 'each' },
  { subsystem: 'topics', probe: 'topic:deliver', what: "a peer's message arrives", source: 'instance', scope: 'each' },
  { subsystem: 'reliable topics', probe: 'reliable:publish', what: 'publish (committed)', source: 'instance', scope: 'each' },
  { subsystem: 'reliable topics', probe: 'reliable:deliver', what: "a peer's message delivered", source: 'instance', scope: 'each' },
  { subsystem: 'sessions', probe: 'sessions', what: 'read + write', source: 'instance', scope: 'each' },
  { subsystem: 'realtime', probe: 'realtime:publish', what: 'publish (logged)', source: 'instance', scope: 'each' },
  { subsystem: 'realtime', probe: 'realtime:deliver', what: "STOMP subscriber gets a peer's message", source: 'stomp', scope: 'each' },
  { subsystem: 'files', probe: 'files', what: 'locked write + read', source: 'instance', scope: 'each' },
  { subsystem: 'dashboard', probe: 'dashboard:read', what: 'API serves a view read after the restart', source: 'dashboard', scope: 'each' },
  { subsystem: 'dashboard', probe: 'dashboard:all-up', what: 'API shows every instance up', source: 'dashboard', scope: 'each' },
]
/** Moments the instances record besides the probes, shown with `--detail`. */
const EVENTS = ['membership:isolated', 'membership:rejoined', 'bus:lost', 'bus:restored', 'singleton:start', 'singleton:stop', 'cron:enqueued', 'jobs:claim-lost', 'jobs:requeued']
/** A probe counts as interrupted by the outage when it had no success in this window before the restart. */
const QUIET_MS = 1000
/** Before a stop, every probe must have succeeded within this window (cron ticks once a second). */
const STEADY_MS = 1500

await runMain(
  async () => {
    const startLoad = loadavg().map((l) => l.toFixed(2)).join(' ')
    const db = await startDatabase()
    const env = {
      DATABASE_URL: db.url(),
      CHORUS_PRESET: opts.preset,
      CHORUS_SECRET: 'outage-bench-secret-outage-bench-secret',
      CHORUS_FILES_ROOT: db.filesRoot,
      BENCH_OUTAGE_INTERVAL: String(opts.interval),
      BENCH_OUTAGE_IN_FLIGHT: String(opts['in-flight']),
      BENCH_OUTAGE_INSTANCES: String(opts.instances),
    }
    const sources = await startCluster(env)
    const version = await serverVersion(db.url())
    const trials = []
    for (let t = 1; t <= opts.trials; t++) {
      const result = await trial(t, db, sources)
      trials.push(result)
      process.stderr.write(`trial ${t}: ${describeTrial(result)}\n`)
    }
    report(trials, sources.settings, `PostgreSQL ${version} (embedded, 127.0.0.1), stop mode ${opts['stop-mode']}\n${machine()} at the end (load average ${startLoad} at the start)`)
    await Promise.all([...sources.instances.map((i) => i.child.stop()), sources.dashboard.stop()])
    for (const s of sources.stomp) await s.client.deactivate().catch(() => undefined)
  },
  { deadlineMs: opts.deadline },
)

// ---- the database -----------------------------------------------------------------------------

/** The embedded PostgreSQL in a temporary directory, with stop and start on the same data and port. */
async function startDatabase() {
  const dir = await mkdtemp(join(tmpdir(), 'chorus-bench-outage-'))
  onCleanup(() => rm(dir, { recursive: true, force: true }))
  await chmod(dir, 0o755) // the postgres user must be able to reach the data directory
  const dataDir = join(dir, 'pg')
  let pg = await startEmbeddedPostgres({ dataDir, port: 0 })
  let running = true
  onCleanup(() => pg.stop())
  return {
    filesRoot: join(dir, 'files'),
    url: () => pg.url,
    async stop() {
      if (opts['stop-mode'] === 'immediate') {
        const pid = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0])
        process.kill(pid, 'SIGQUIT')
      }
      await pg.stop()
      running = false
    },
    async start() {
      if (running) return
      pg = await startEmbeddedPostgres({ dataDir, port: pg.port })
      running = true
    },
  }
}

/** Resolves with the start time of the first fresh connection that runs `select 1`. */
async function pollReady(url, signal) {
  for (;;) {
    if (signal.aborted) throw new Error('stopped polling')
    const t0 = now()
    const sql = postgres(url, { max: 1, connect_timeout: 2, onnotice: () => undefined, fetch_types: false, prepare: false })
    try {
      await sql`select 1`
      return t0
    } catch {
      await sleep(10)
    } finally {
      await sql.end({ timeout: 0 }).catch(() => undefined)
    }
  }
}

async function serverVersion(url) {
  const sql = postgres(url, { max: 1, onnotice: () => undefined })
  try {
    const [row] = await sql`select current_setting('server_version') as v`
    return row.v
  } finally {
    await sql.end({ timeout: 1 })
  }
}

// ---- the cluster ------------------------------------------------------------------------------

async function startCluster(env) {
  const instances = []
  for (let i = 0; i < opts.instances; i++) {
    const id = `outage-${String.fromCharCode(97 + i)}`
    const child = new Child(INSTANCE, [], { ...env, CHORUS_INSTANCE_ID: id })
    instances.push({ id, child })
  }
  const ready = await Promise.all(instances.map(({ id, child }) => started(child, id)))
  instances.forEach((inst, i) => (inst.port = ready[i].port))
  const dashboard = new Child(DASHBOARD, [], env)
  await started(dashboard, 'the dashboard')
  const stomp = []
  for (const inst of instances) stomp.push(await subscribe(inst))
  const { heartbeatMs, failAfterMs, preset } = ready[0]
  return { instances, dashboard, stomp, settings: { heartbeatMs, failAfterMs, preset } }
}

/** Resolves with the child's `ready` message; rejects if it reports a failed start or exits first. */
async function started(child, what) {
  const exited = child.exited.then(({ code, signal }) => {
    throw new Error(`${what} exited before it was ready (${signal ?? `code ${code}`})`)
  })
  const m = await Promise.race([child.waitFor((m) => m.type === 'ready' || m.type === 'start-failed', 60_000, `${what} ready`), exited])
  if (m.type === 'start-failed') throw new Error(`${what} failed to start: ${m.message}`)
  return m
}

/** A @stomp/stompjs subscriber on one instance, recording each message a peer published. */
function subscribe(inst) {
  const sub = { id: inst.id, records: {}, connects: 0, disconnects: 0, client: null }
  const record = (probe, ok) => {
    const t = now()
    ;(sub.records[probe] ??= []).push([t, t, ok ? 1 : 0])
  }
  return new Promise((resolve, reject) => {
    const client = new StompClient({
      webSocketFactory: () => new WebSocket(`ws://127.0.0.1:${inst.port}/stomp`, ['v12.stomp'], { perMessageDeflate: false }),
      reconnectDelay: 200,
      heartbeatIncoming: 0,
      heartbeatOutgoing: 0,
      debug: () => undefined,
    })
    sub.client = client
    const timer = setTimeout(() => reject(new Error(`no STOMP receipt from ${inst.id} within 30 s`)), 30_000)
    client.onConnect = () => {
      sub.connects++
      const receipt = `sub-${sub.connects}`
      client.watchForReceipt(receipt, () => {
        clearTimeout(timer)
        resolve(sub)
      })
      client.subscribe(
        TOPIC,
        (msg) => {
          let from
          try {
            from = JSON.parse(msg.body).from
          } catch {
            return
          }
          if (from !== inst.id) record('realtime:deliver', true)
        },
        { receipt },
      )
    }
    client.onWebSocketClose = () => {
      sub.disconnects++
    }
    client.activate()
  })
}

// ---- a trial ----------------------------------------------------------------------------------

async function collectAll(sources, into) {
  const add = (key, records) => {
    const bucket = (into[key] ??= {})
    for (const [probe, list] of Object.entries(records)) (bucket[probe] ??= []).push(...list)
  }
  const errors = {}
  const pending = {}
  await Promise.all(
    sources.instances.map(async (inst) => {
      if (!inst.child.running) return
      const r = await inst.child.call({ cmd: 'collect' }, 10_000).catch(() => null)
      if (!r) return
      add(inst.id, r.records)
      for (const [p, e] of Object.entries(r.errors)) errors[`${inst.id} ${p}`] = e
      pending[inst.id] = r.pending
    }),
  )
  if (sources.dashboard.running) {
    const r = await sources.dashboard.call({ cmd: 'collect' }, 10_000).catch(() => null)
    if (r) {
      add('dashboard', r.records)
      for (const [p, e] of Object.entries(r.errors)) errors[`dashboard ${p}`] = e
    }
  }
  for (const s of sources.stomp) {
    add(`stomp:${s.id}`, s.records)
    s.records = {}
  }
  return { errors, pending }
}

/** The recorders of a probe: one per instance, one STOMP subscriber per instance, or the dashboard. */
function recordersOf(p, sources) {
  if (p.source === 'instance') return sources.instances.map((i) => i.id)
  if (p.source === 'stomp') return sources.instances.map((i) => `stomp:${i.id}`)
  return ['dashboard']
}

async function trial(n, db, sources) {
  const records = {}
  const errorsBefore = {} // while the database was up
  const errors = {} // from the stop on
  // Steady load first; what came before is not this trial's.
  await Promise.all(sources.instances.map((i) => i.child.call({ cmd: 'load' })))
  await sources.dashboard.call({ cmd: 'load' })
  await collectAll(sources, {})
  // At least `--warmup` ms, and until every probe succeeds (everywhere, for per-instance work).
  const warmStart = now()
  let unsteady = []
  for (;;) {
    await sleep(250)
    Object.assign(errorsBefore, (await collectAll(sources, records)).errors)
    unsteady = PROBES.filter((p) => !steady(p, records, sources, now() - STEADY_MS)).map((p) => p.probe)
    if (now() - warmStart >= opts.warmup && unsteady.length === 0) break
    if (now() - warmStart >= opts['warmup-max']) {
      process.stderr.write(`trial ${n}: not every probe succeeds after ${fmt(opts['warmup-max'])} ms of load (${unsteady.join(', ')}); stopping PostgreSQL anyway\n`)
      break
    }
  }
  const loadAtStop = loadavg()[0]
  const disconnectsBefore = sources.stomp.map((s) => s.disconnects)
  const exitsBefore = sources.instances.filter((i) => !i.child.running).length

  // Whatever failed while the database was up is told apart from what the outage did.
  Object.assign(errorsBefore, (await collectAll(sources, records)).errors)
  const stopAt = now()
  await db.stop()
  const downAt = now()
  await sleep(opts['down-seconds'] * 1000)
  const startAt = now()
  const poll = new AbortController()
  const ready = pollReady(db.url(), poll.signal)
  ready.catch(() => undefined)
  await db.start()
  const startedAt = now() // the server logged "ready to accept connections"
  const readyAt = await ready
  const activity = opts.detail ? watchActivity(db.url(), readyAt) : null

  // Collect until every probe recovered (or `--observe` ran out).
  const deadline = readyAt + opts.observe
  let times
  let pending = {}
  for (;;) {
    const got = await collectAll(sources, records)
    Object.assign(errors, got.errors)
    pending = got.pending
    times = recoveries(records, pending, sources, { stopAt, downAt, startAt, readyAt })
    // Done when every probe recovered and nothing begun during the outage is still unfinished.
    if (Object.values(times).every((t) => (t.ms !== null || t.interrupted === false) && t.hung === 0) || now() > deadline) break
    await sleep(250)
  }
  poll.abort()
  const samples = activity ? await activity.stop() : []
  // Recorded moments (isolated, rejoined, bus connection lost and restored), ms from readyAt.
  const events = {}
  for (const [r, probes] of Object.entries(records)) {
    for (const [probe, list] of Object.entries(probes)) {
      if (!EVENTS.includes(probe)) continue
      const after = list.filter(([t0]) => t0 >= stopAt).map(([t0]) => t0 - readyAt)
      if (after.length) events[`${r} ${probe}`] = after
    }
  }
  return {
    events,
    samples,
    trial: n,
    stopAt,
    readyAt,
    warmMs: stopAt - warmStart,
    stopMs: downAt - stopAt,
    downMs: startAt - downAt,
    startMs: startedAt - startAt,
    readyAfterStartMs: readyAt - startAt,
    loadAtStop,
    times,
    errors,
    errorsBefore,
    unsteady,
    stompReconnects: sources.stomp.map((s, i) => s.disconnects - disconnectsBefore[i]),
    crashed: sources.instances.filter((i) => !i.child.running).length - exitsBefore,
  }
}

/**
 * For each probe: `ms`, the time from `readyAt` to its first success after the restart began (on
 * every recorder for `each`, on the first for `any`), null if not seen; `interrupted`, whether the
 * outage stopped it at all (no success in the last second before the restart); `failures` during the
 * outage; `perRecorder` times.
 */
function recoveries(records, pending, sources, { stopAt, startAt, readyAt }) {
  const out = {}
  for (const p of PROBES) {
    const per = {}
    const quiet = []
    let failures = 0
    let workedBefore = false
    for (const r of recordersOf(p, sources)) {
      const list = records[r]?.[p.probe] ?? []
      let first = null
      let lastBefore = null
      for (const [t0, t1, ok] of list) {
        if (ok && t1 < stopAt) workedBefore = true
        if (!ok && t0 >= stopAt && t1 <= readyAt + GOAL_MS) failures++
        if (ok && t1 <= startAt) lastBefore = lastBefore === null ? t1 : Math.max(lastBefore, t1)
        if (ok && t1 > startAt && (first === null || t1 < first)) first = t1
      }
      quiet.push(lastBefore === null || lastBefore <= startAt - QUIET_MS)
      per[r] = first === null ? null : first - readyAt
    }
    // Per-instance work was hit if it stopped anywhere; cluster-wide work if it stopped everywhere.
    const interrupted = p.scope === 'each' ? quiet.some(Boolean) : quiet.every(Boolean)
    const values = Object.values(per)
    let ms
    if (p.scope === 'each') ms = values.includes(null) ? null : Math.max(...values)
    else ms = values.every((v) => v === null) ? null : Math.min(...values.filter((v) => v !== null))
    // How long one successful attempt took while the database was up: what the load alone costs.
    const took = recordersOf(p, sources).flatMap((r) => (records[r]?.[p.probe] ?? []).filter(([t0, t1, ok]) => ok && t1 < stopAt && t1 > t0).map(([t0, t1]) => t1 - t0))
    const attemptMs = took.length ? quantile(took.sort((a, b) => a - b), 0.5) : null
    // Attempts begun before PostgreSQL accepted connections: when the last of them finished (or how many hang still).
    let settledMs = null
    let hung = 0
    if (p.source === 'instance') {
      for (const r of recordersOf(p, sources)) {
        for (const [t0, t1] of records[r]?.[p.probe] ?? []) if (t0 < readyAt && t1 > readyAt && t1 > t0) settledMs = Math.max(settledMs ?? 0, t1 - readyAt)
        hung += (pending[r]?.[p.probe] ?? []).filter((t0) => t0 < readyAt).length
      }
    }
    out[p.probe] = { ms, interrupted, failures, workedBefore, attemptMs, settledMs, hung, perRecorder: per }
  }
  return out
}

/**
 * With `--detail`: what the Chorus backends are doing every 250 ms after the restart (those not
 * idle, grouped by connection purpose, state, wait event and the statement's first words), to show
 * what recovering work waits on.
 */
function watchActivity(url, readyAt) {
  const sql = postgres(url, { max: 1, onnotice: () => undefined, connect_timeout: 2 })
  const samples = []
  let stopped = false
  const loop = (async () => {
    while (!stopped && now() - readyAt < 10_000) {
      const at = now() - readyAt
      try {
        const rows = await sql`
          select split_part(application_name, ':', 2) || ':' || split_part(application_name, ':', 3) as who, state,
                 coalesce(wait_event_type || '/' || wait_event, '') as wait,
                 left(replace(regexp_replace(btrim(query), '[[:space:]]+', ' ', 'g'), '"chorus".', ''), 60) as q, count(*)::int as n
          from pg_stat_activity
          where application_name like 'chorus:%' and state <> 'idle' and pid <> pg_backend_pid()
          group by 1, 2, 3, 4 order by n desc`
        samples.push({ at, rows })
      } catch (err) {
        samples.push({ at, error: err.message })
      }
      await sleep(250)
    }
  })()
  return {
    async stop() {
      stopped = true
      await loop
      // And every connection each client holds at the end, idle ones included: a client that never reconnected has none.
      try {
        const rows = await sql`
          select split_part(application_name, ':', 2) || ':' || split_part(application_name, ':', 3) as who, count(*)::int as n
          from pg_stat_activity where application_name like 'chorus:%' and pid <> pg_backend_pid() group by 1 order by 1`
        samples.push({ at: now() - readyAt, connections: rows })
      } catch (err) {
        samples.push({ at: now() - readyAt, error: err.message })
      }
      await sql.end({ timeout: 0 }).catch(() => undefined)
      return samples
    },
  }
}

/** True when the probe succeeded since `since` on every recorder (`each`) or on one (`any`). */
function steady(p, records, sources, since) {
  const ok = recordersOf(p, sources).map((r) => (records[r]?.[p.probe] ?? []).some(([, t1, good]) => good && t1 >= since))
  return p.scope === 'each' ? ok.every(Boolean) : ok.some(Boolean)
}

function describeTrial(t) {
  const worst = PROBES.map((p) => ({ p, r: t.times[p.probe] })).filter(({ r }) => r.interrupted).sort((a, b) => (b.r.ms ?? Infinity) - (a.r.ms ?? Infinity))[0]
  return (
    `PostgreSQL stopped in ${fmt(t.stopMs)} ms, down ${fmt(t.downMs)} ms, accepting ${fmt(t.readyAfterStartMs)} ms after the start` +
    (worst ? `; slowest: ${worst.p.probe} ${worst.r.ms === null ? 'not recovered' : `${fmt(worst.r.ms)} ms`}` : '') +
    `; load ${t.loadAtStop.toFixed(2)}` +
    (t.crashed ? `; ${t.crashed} instance(s) EXITED` : '')
  )
}

// ---- the report -------------------------------------------------------------------------------

function report(trials, settings, environment) {
  const w = (s) => process.stdout.write(s)
  w(
    `\nOutage benchmark: ${trials.length} trial(s) of PostgreSQL stopped for ${opts['down-seconds']} s under steady load, ` +
      `${opts.instances} instance processes (preset ${settings.preset}: heartbeat ${settings.heartbeatMs} ms, failAfter ${settings.failAfterMs} ms), ` +
      `one attempt per loop every ${opts.interval} ms on each instance, a dashboard process and a STOMP subscriber on each instance.\n` +
      `${environment}\n` +
      `Times are ms from the moment PostgreSQL accepted a fresh connection again to the first success after the restart ` +
      `(on every instance for per-instance work; on any instance for a job, a cron tick, the singleton). Goal: ≤ ${fmt(GOAL_MS)} ms.\n\n`,
  )
  w(
    table(
      ['trial', 'load before stop ms', 'stop ms', 'down ms', 'start→accepting ms', 'load (1 min) at stop', 'STOMP reconnects', 'instances exited'],
      trials.map((t) => [t.trial, fmt(t.warmMs), fmt(t.stopMs), fmt(t.downMs), fmt(t.readyAfterStartMs), t.loadAtStop.toFixed(2), t.stompReconnects.join(' '), t.crashed]),
    ) + '\n',
  )
  for (const t of trials) if (t.unsteady.length > 0) w(`trial ${t.trial}: stopped before every probe succeeded (${t.unsteady.join(', ')})\n`)
  w('\n')

  const summary = []
  const rows = PROBES.map((p) => {
    const per = trials.map((t) => t.times[p.probe])
    const seen = per.filter((r) => r.interrupted)
    const values = seen.map((r) => (r.ms === null ? Infinity : r.ms)).sort((a, b) => a - b)
    const med = values.length ? quantile(values, 0.5) : null
    const max = values.length ? values[values.length - 1] : null
    const met = values.length === 0 ? null : max <= GOAL_MS
    summary.push({ subsystem: p.subsystem, probe: p.probe, trials: per.map((r) => r.ms), interrupted: per.map((r) => r.interrupted), median: med, max, met })
    const cell = (r) => (!r.workedBefore ? 'never worked' : !r.interrupted ? 'not hit' : r.ms === null ? 'not recovered' : fmt(r.ms))
    const show = (v) => (v === null ? '–' : v === Infinity ? 'not recovered' : fmt(v))
    const attempt = per.map((r) => r.attemptMs).filter((v) => v !== null)
    const hung = per.reduce((s, r) => s + r.hung, 0)
    const settled = per.map((r) => r.settledMs).filter((v) => v !== null)
    return [
      p.subsystem, `${p.probe}: ${p.what}`, ...per.map(cell), show(med), show(max), met === null ? '–' : met ? 'met' : 'NOT met',
      fmt(per.reduce((s, r) => s + r.failures, 0)), attempt.length ? fmt(Math.max(...attempt)) : '–',
      hung > 0 ? `${hung} hung` : settled.length ? fmt(Math.max(...settled)) : '–',
    ]
  })
  w(table(['subsystem', 'probe', ...trials.map((t) => `#${t.trial} ms`), 'median ms', 'max ms', `≤ ${fmt(GOAL_MS)} ms`, 'failed attempts', 'attempt p50 ms', 'outage attempts settled ms'], rows) + '\n')
  w(
    `(not hit: the probe kept succeeding through the outage; failed attempts: summed over trials, from the stop to ${fmt(GOAL_MS)} ms after PostgreSQL ` +
      `accepted connections; attempt p50: median time of one successful attempt while the database was up, worst trial — what the load alone costs; ` +
      `outage attempts settled: when the last attempt begun before PostgreSQL accepted connections finished (succeeded or failed), worst trial, ` +
      `or how many were still unfinished when the trial ended)\n\n`,
  )
  if (opts.detail) {
    for (const t of trials) {
      const events = Object.entries(t.events).map(([k, v]) => `${k} ${v.map((x) => Math.round(x)).join('/')}`)
      w(`trial ${t.trial}: PostgreSQL accepted connections at ${new Date(t.readyAt).toISOString()}; ms from then, per recorder and (events) ${events.join('; ') || 'none'}:\n`)
      for (const p of PROBES) w(`  ${p.probe.padEnd(18)} ${Object.entries(t.times[p.probe].perRecorder).map(([r, v]) => `${r} ${v === null ? '–' : fmt(v)}`).join(', ')}\n`)
      w('  backends not idle (n who state wait statement), every 250 ms after the restart:\n')
      for (const sample of t.samples) {
        const what = sample.error ?? (sample.connections
          ? `connections held: ${sample.connections.map((r) => `${r.who} ${r.n}`).join(', ')}`
          : sample.rows.map((r) => `${r.n} ${r.who} ${r.state} ${r.wait} "${r.q}"`).join(' | ') || 'none')
        w(`    ${String(Math.round(sample.at)).padStart(6)} ms: ${what}\n`)
      }
    }
    w('\n')
  }

  // Per subsystem: its slowest probe.
  const bySubsystem = new Map()
  for (const s of summary) {
    const cur = bySubsystem.get(s.subsystem)
    const worse = (a, b) => (a === null ? b : b === null ? a : Math.max(a, b))
    bySubsystem.set(s.subsystem, cur ? { median: worse(cur.median, s.median), max: worse(cur.max, s.max) } : { median: s.median, max: s.max })
  }
  const show = (v) => (v === null ? '–' : v === Infinity ? 'not recovered' : fmt(v))
  w(
    table(
      ['subsystem (slowest probe)', 'median ms', 'max ms', `goal ≤ ${fmt(GOAL_MS)} ms`],
      [...bySubsystem].map(([name, v]) => [name, show(v.median), show(v.max), v.max === null ? '–' : v.max <= GOAL_MS ? 'met' : 'NOT met']),
    ) + '\n',
  )
  const missed = [...bySubsystem].filter(([, v]) => v.max !== null && v.max > GOAL_MS).map(([k]) => k)
  w(`\n${missed.length === 0 ? 'Every subsystem met the goal in every trial.' : `Goal not met by: ${missed.join(', ')}.`}\n`)
  w(`load average at the end: ${loadavg().map((l) => l.toFixed(2)).join(' ')}\n`)

  const before = new Map()
  for (const t of trials) for (const [k, e] of Object.entries(t.errorsBefore)) before.set(k, e)
  if (before.size > 0) {
    w('\nErrors while PostgreSQL was up (before a stop):\n')
    for (const [k, e] of [...before].sort()) w(`  ${k}: ${e}\n`)
  }
  const errors = new Map()
  for (const t of trials) for (const [k, e] of Object.entries(t.errors)) if (before.get(k) !== e) errors.set(k, e)
  if (errors.size > 0) {
    w('\nLast error per probe during the outages:\n')
    for (const [k, e] of [...errors].sort()) w(`  ${k}: ${e}\n`)
  }
  if (opts.json) w(JSON.stringify({ options: opts, settings, trials: trials.map(({ errors: _e, errorsBefore: _b, samples: _s, ...t }) => t), summary }) + '\n')
}
