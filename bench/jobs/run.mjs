// Jobs benchmark: Chorus jobs against pg-boss and graphile-worker, each on its own database of
// the same embedded PostgreSQL in the same run. Per system: one producer process enqueues N no-op
// jobs one call per job (unbatched; a window of unfinished enqueues), one worker process runs them.
// The systems run interleaved (warm-up for each, then the throughput phase for each, then the
// latency phase for each), and every row records the load average right after it, so a machine
// shared with other work weighs on every system alike. For Chorus the paced run also prints where
// enqueue→start goes, from its `chorus:jobs` diagnostics marks (see `breakdown`).
//   jobs/s          — N / (last job finished − first enqueue began), enqueues as fast as they go
//   enqueue→start   — handler start time − the time carried in the payload (taken just before the
//                     enqueue call); in the throughput run this is mostly queueing, so a second,
//                     paced run offers `latency-jobs` at `rate` jobs/s, which every system sustains
//
//   node bench/jobs/run.mjs [--jobs 20000] [--concurrency 10] [--window 50] [--rate 200] [--only chorus] [--phases latency] …
//   node bench/jobs/run.mjs --help
//
// Settings, the same for every system unless the system has no such knob: `concurrency` handlers
// at once in the worker; database pools of 10. pg-boss (v10) only polls (its minimum interval is
// 0.5 s) and has no per-worker concurrency, so it gets `concurrency` workers each fetching batches
// of `pgboss-batch` jobs — more jobs in flight than the others, its most favourable setting.
// graphile-worker runs with its defaults (LISTEN/NOTIFY wake-ups) and `concurrency`.
//
// The same file is the producer and the worker: `run.mjs producer|worker <system>`.
import { subscribe } from 'node:diagnostics_channel'
import { loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import postgres from 'postgres'
import { Child, fmt, machine, now, options, quantile, runMain, serveParent, sleep, startDatabase, table } from '../lib/harness.mjs'

const SCRIPT = fileURLToPath(import.meta.url)
const SYSTEMS = ['chorus', 'graphile-worker', 'pg-boss']
const SECRET = 'bench-secret-0123456789abcdef'
const QUEUE = 'noop'

const role = process.argv[2]
if (role === 'producer') await producer(process.argv[3])
else if (role === 'worker') await worker(process.argv[3])
else await coordinator()

// ---- the coordinator -------------------------------------------------------------------------

async function coordinator() {
  const opts = options('BENCH_JOBS', {
    jobs: 20_000, // measured jobs per system
    warmup: 1_000, // jobs run and discarded first
    concurrency: 10, // handlers at once in the worker
    window: 50, // unfinished enqueue calls at once in the producer
    'pgboss-batch': 10, // jobs per pg-boss fetch
    'latency-jobs': 2_000, // jobs in the paced latency run (0: none)
    rate: 200, // offered jobs/s in the paced latency run
    phases: 'both', // 'throughput', 'latency' or 'both'
    only: '', // run one system
    deadline: 900_000, // ms before the whole run is stopped
    json: false,
  })
  const systems = opts.only ? [opts.only] : SYSTEMS
  for (const s of systems) if (!SYSTEMS.includes(s)) throw new Error(`--only must be one of ${SYSTEMS.join(', ')}`)
  await runMain(
    async () => {
      const db = await startDatabase()
      const admin = postgres(db.url, { max: 1, onnotice: () => undefined })
      const loads = [machine()]
      const sessions = []
      try {
        for (const system of systems) {
          const name = `bench_${system.replace(/-/g, '_')}`
          await admin.unsafe(`create database ${name}`)
          process.stderr.write(`${system}: setting up …\n`)
          sessions.push(await open(system, db.url.replace(/\/postgres$/, `/${name}`), opts))
        }
        // Interleaved: each phase runs for every system in turn, so a change in the machine's
        // load falls on all of them alike; every system's throughput phase precedes its latency phase.
        const results = []
        const phase = async (label, f) => {
          for (const session of sessions) {
            process.stderr.write(`${session.system}: ${label} (${loadNow()}) …\n`)
            const row = await f(session)
            if (row) results.push({ ...row, load: loadNow() })
          }
          loads.push(machine())
        }
        if (opts.warmup > 0) await phase('warm-up', async (x) => void (await x.run(opts.warmup)))
        await sleep(500)
        if (opts.phases !== 'latency') await phase('throughput', async (x) => summarise(x.system, 'throughput', opts.jobs, await x.run(opts.jobs)))
        if (opts.phases !== 'throughput' && opts['latency-jobs'] > 0) {
          await sleep(500)
          await phase('latency', async (x) => summarise(x.system, `latency @ ${opts.rate}/s`, opts['latency-jobs'], await x.run(opts['latency-jobs'], opts.rate)))
        }
        report(results, opts, `${await db.describe()}\n${loads.join('\n')}`)
      } finally {
        await Promise.all(sessions.map((x) => x.stop()))
        await admin.end()
      }
    },
    { deadlineMs: opts.deadline },
  )
}

function loadNow() {
  return `load ${loadavg()
    .map((l) => l.toFixed(1))
    .join(' ')}`
}

/** One system's worker and producer processes, set up; `run(n, rate)` runs n jobs through them. */
async function open(system, url, o) {
  const env = { DATABASE_URL: url, BENCH_CONCURRENCY: String(o.concurrency), BENCH_PGBOSS_BATCH: String(o['pgboss-batch']) }
  const workerProc = new Child(SCRIPT, ['worker', system], env)
  // The worker sets the schema up first, so the producer finds it.
  await workerProc.call({ cmd: 'setup' }, 120_000)
  const producerProc = new Child(SCRIPT, ['producer', system], env)
  await producerProc.call({ cmd: 'setup' }, 120_000)
  return {
    system,
    async run(n, rate = 0) {
      await workerProc.call({ cmd: 'arm', n })
      const collected = workerProc.call({ cmd: 'collect' }, 600_000)
      const sent = await producerProc.call({ cmd: 'produce', n, window: o.window, rate }, 600_000)
      const got = await collected
      return { sent, got }
    },
    stop: () => Promise.all([producerProc.stop(), workerProc.stop()]),
  }
}

function summarise(system, phase, jobs, { sent, got }) {
  const latencies = got.latencies.sort((a, b) => a - b)
  const seconds = (got.lastEnd - sent.firstAt) / 1000
  return {
    system,
    phase,
    jobs,
    ran: got.ran,
    duplicates: got.duplicates,
    seconds,
    perSecond: got.ran / seconds,
    enqueuePerSecond: jobs / ((sent.doneAt - sent.firstAt) / 1000),
    p50: quantile(latencies, 0.5),
    p90: quantile(latencies, 0.9),
    p99: quantile(latencies, 0.99),
    max: latencies.at(-1),
    breakdown: breakdown(sent, got),
  }
}

/**
 * Where enqueue→start goes, per job (Chorus only: its `chorus:jobs` diagnostics marks): the
 * enqueue call until its commit returned; commit → the wake-up handed to the producer's bus;
 * handed → received by the worker (the NOTIFY transaction and its delivery); received → the claim
 * statement that took the job issued (negative when a round already under way took it); the claim
 * statement; claim returned → handler start. Marks are matched in time order (the first wake-up
 * handed over after a job's commit, the first received after that); all times are epoch ms on the
 * one machine.
 */
function breakdown(sent, got) {
  if (!sent.commits || !got.jobs) return null
  const after = (sorted, t) => {
    let lo = 0
    let hi = sorted.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (sorted[mid] < t) lo = mid + 1
      else hi = mid
    }
    return sorted[lo]
  }
  const parts = { enqueue: [], 'commit→handed': [], 'handed→received': [], 'received→claim': [], claim: [], 'claimed→start': [] }
  for (const j of got.jobs) {
    const commit = sent.commits[j.seq]
    const handed = after(sent.handed, commit)
    const received = handed === undefined ? undefined : after(got.received, handed)
    if (commit === undefined || handed === undefined || received === undefined || j.issued === undefined) continue
    parts.enqueue.push(commit - j.t)
    parts['commit→handed'].push(handed - commit)
    parts['handed→received'].push(received - handed)
    parts['received→claim'].push(j.issued - received)
    parts.claim.push(j.returned - j.issued)
    parts['claimed→start'].push(j.start - j.returned)
  }
  return Object.entries(parts).map(([part, xs]) => {
    xs.sort((a, b) => a - b)
    return { part, n: xs.length, p50: quantile(xs, 0.5), p99: quantile(xs, 0.99) }
  })
}

function report(rows, o, environment) {
  process.stdout.write(
    `\nJobs benchmark: ${fmt(o.jobs)} no-op jobs per system after ${fmt(o.warmup)} warm-up jobs; unbatched enqueues (window ${o.window}); ` +
      `worker concurrency ${o.concurrency} (pg-boss: ${o.concurrency} workers × batches of ${o['pgboss-batch']}, polling every 0.5 s). ` +
      `One producer process and one worker process per system, one embedded PostgreSQL on 127.0.0.1.\n${environment}\n\n`,
  )
  process.stdout.write(
    table(
      ['system', 'phase', 'ran', 'dupes', 'jobs/s', 'enqueue/s', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'after it'],
      rows.map((r) => [r.system, r.phase, fmt(r.ran), fmt(r.duplicates), fmt(r.perSecond), fmt(r.enqueuePerSecond), fmt(r.p50, 2), fmt(r.p90, 2), fmt(r.p99, 2), fmt(r.max, 1), r.load]),
    ) + '\n',
  )
  process.stdout.write(
    '\njobs/s: jobs run / (last job finished − first enqueue began). p50…max: enqueue→start latency; in throughput rows mostly queueing, see the paced rows.\n',
  )
  const chorus = rows.find((r) => r.system === 'chorus' && r.phase === 'throughput')
  const goals = { 'pg-boss': 1.5, 'graphile-worker': 1 }
  for (const r of rows) {
    if (!chorus || r.system === 'chorus' || r.phase !== 'throughput') continue
    const ratio = chorus.perSecond / r.perSecond
    process.stdout.write(`Chorus/${r.system} jobs/s = ${fmt(ratio, 2)}× (goal ≥ ${goals[r.system]}×: ${ratio >= goals[r.system] ? 'met' : 'NOT met'})\n`)
  }
  for (const r of rows.filter((x) => x.phase.startsWith('latency'))) {
    process.stdout.write(`${r.system} enqueue→start at ${o.rate}/s: p50 ${fmt(r.p50, 2)} ms, p99 ${fmt(r.p99, 2)} ms (${r.load} after it)\n`)
  }
  for (const r of rows.filter((x) => x.breakdown)) {
    process.stdout.write(`\n${r.system} ${r.phase}, enqueue→start by part (ms):\n`)
    process.stdout.write(table(['part', 'jobs', 'p50 ms', 'p99 ms'], r.breakdown.map((b) => [b.part, fmt(b.n), fmt(b.p50, 2), fmt(b.p99, 2)])) + '\n')
  }
  const paced = rows.find((r) => r.system === 'chorus' && r.phase.startsWith('latency'))
  if (paced) process.stdout.write(`Chorus enqueue→start p50 at ${o.rate}/s = ${fmt(paced.p50, 2)} ms (goal ≤ 5 ms: ${paced.p50 <= 5 ? 'met' : 'NOT met'})\n`)
  if (o.json) process.stdout.write(JSON.stringify({ options: o, rows }) + '\n')
}

// ---- the producer ----------------------------------------------------------------------------

async function producer(system) {
  const url = process.env.DATABASE_URL
  let enqueue
  let close
  let traced = false
  let handed = []
  serveParent({
    async setup() {
      if (system === 'chorus') {
        const { createCluster } = await import('../../dist/index.js')
        const cluster = await createCluster({ databaseUrl: url, instanceId: 'producer', preset: 'local', secret: SECRET, logLevel: 'warn' })
        enqueue = (payload) => cluster.jobs.enqueue(QUEUE, payload)
        close = () => cluster.close()
        traced = true
        subscribe('chorus:jobs', (m) => {
          if (m.stage === 'wake-sent') handed.push(m.at)
        })
      } else if (system === 'graphile-worker') {
        const { makeWorkerUtils } = await import('graphile-worker')
        const utils = await makeWorkerUtils({ connectionString: url })
        enqueue = (payload) => utils.addJob(QUEUE, payload)
        close = () => utils.release()
      } else {
        const { default: PgBoss } = await import('pg-boss')
        const boss = new PgBoss({ connectionString: url, max: 10 })
        boss.on('error', (err) => process.stderr.write(`pg-boss: ${err.message}\n`))
        await boss.start()
        enqueue = (payload) => boss.send(QUEUE, payload)
        close = () => boss.stop({ graceful: false, wait: true })
      }
      return {}
    },
    async produce({ n, window, rate }) {
      let next = 0
      handed = []
      // Per job (by seq), when its enqueue call returned (committed); only for the paced run.
      const commits = rate > 0 && traced ? new Array(n) : null
      const firstAt = now()
      if (rate > 0) {
        // Paced: job i is enqueued at firstAt + i / rate, without waiting for earlier enqueues.
        const pending = []
        for (let i = 0; i < n; i++) {
          const wait = firstAt + (i * 1000) / rate - now()
          if (wait > 1) await sleep(wait)
          pending.push(
            enqueue({ seq: i, t: now() }).then(() => {
              if (commits) commits[i] = now()
            }),
          )
        }
        await Promise.all(pending)
        return { firstAt, doneAt: now(), commits, handed: commits ? handed : null }
      }
      const lane = async () => {
        while (next < n) {
          const seq = next++
          await enqueue({ seq, t: now() })
        }
      }
      await Promise.all(Array.from({ length: window }, lane))
      return { firstAt, doneAt: now() }
    },
    async stop() {
      await close?.()
      setImmediate(() => process.exit(0))
      return {}
    },
  })
}

// ---- the worker ------------------------------------------------------------------------------

async function worker(system) {
  const url = process.env.DATABASE_URL
  const concurrency = Number(process.env.BENCH_CONCURRENCY)
  let expected = 0
  let seen = new Set()
  let latencies = []
  let duplicates = 0
  let lastEnd = 0
  let done = null
  // Chorus only: its diagnostics marks, and per started job when its claim was issued and returned.
  let received = []
  const claims = new Map()
  let jobs = []
  const started = (payload, id) => {
    const t = now()
    if (seen.has(payload.seq)) duplicates++
    else {
      seen.add(payload.seq)
      latencies.push(t - payload.t)
      const c = id === undefined ? undefined : claims.get(id)
      if (c) {
        claims.delete(id)
        jobs.push({ seq: payload.seq, t: payload.t, start: t, issued: c.issuedAt, returned: c.at })
      }
    }
  }
  const finished = () => {
    lastEnd = now()
    if (seen.size >= expected && done) {
      const d = done
      done = null
      d()
    }
  }
  let close
  serveParent({
    async setup() {
      if (system === 'chorus') {
        const { createCluster } = await import('../../dist/index.js')
        const cluster = await createCluster({ databaseUrl: url, instanceId: 'worker', preset: 'local', secret: SECRET, logLevel: 'warn' })
        subscribe('chorus:jobs', (m) => {
          if (m.stage === 'wake-received') received.push(m.at)
          else if (m.stage === 'claim-returned') for (const id of m.ids) claims.set(id, m)
        })
        cluster.jobs.define(
          QUEUE,
          (payload, ctx) => {
            started(payload, ctx.job.id)
            finished()
          },
          { concurrency },
        )
        close = () => cluster.close()
      } else if (system === 'graphile-worker') {
        const { run, runMigrations } = await import('graphile-worker')
        await runMigrations({ connectionString: url })
        const { Logger } = await import('graphile-worker')
        const runner = await run({
          connectionString: url,
          concurrency,
          noHandleSignals: true,
          logger: new Logger(() => () => undefined),
          taskList: {
            [QUEUE]: async (payload) => {
              started(payload)
              finished()
            },
          },
        })
        close = () => runner.stop()
      } else {
        const { default: PgBoss } = await import('pg-boss')
        const boss = new PgBoss({ connectionString: url, max: 10 })
        boss.on('error', (err) => process.stderr.write(`pg-boss: ${err.message}\n`))
        await boss.start()
        await boss.createQueue(QUEUE)
        const batchSize = Number(process.env.BENCH_PGBOSS_BATCH)
        for (let i = 0; i < concurrency; i++) {
          await boss.work(QUEUE, { batchSize, pollingIntervalSeconds: 0.5 }, async (jobs) => {
            for (const job of jobs) started(job.data)
            finished()
          })
        }
        close = () => boss.stop({ graceful: false, wait: true })
      }
      return {}
    },
    async arm({ n }) {
      expected = n
      seen = new Set()
      latencies = []
      duplicates = 0
      received = []
      jobs = []
      claims.clear()
      return {}
    },
    collect() {
      return new Promise((resolve) => {
        done = () => resolve({ ran: seen.size, duplicates, latencies, lastEnd, received, jobs: jobs.length > 0 ? jobs : null })
        if (seen.size >= expected) finished()
      })
    },
    async stop() {
      await close?.()
      setImmediate(() => process.exit(0))
      return {}
    },
  })
}
