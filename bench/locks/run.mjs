// Locks benchmark: uncontended acquire + release per second, one caller, side by side in one run:
//   chorus   — cluster.locks.acquire(name) then lock.release(): a fenced lease with a token
//   raw      — pg_advisory_lock / pg_advisory_unlock on one connection (`postgres` package),
//              on the same embedded PostgreSQL: no token, no TTL, tied to that connection
//   redlock  — redlock (single instance) on a local redis-server: TTL, no fencing token
// Each system runs --seconds per round after a warm-up; rounds alternate the order, and the
// median round is reported with ratios against Chorus.
//
//   node bench/locks/run.mjs [--seconds 3] [--rounds 3] [--warmup 300] [--only chorus,raw]
//
// redis-server comes from Debian's package: installed with apt-get when missing (needs root),
// started on 127.0.0.1 on a free port without persistence, and stopped at the end.
import { performance } from 'node:perf_hooks'
import postgres from 'postgres'
import { createCluster } from '../../dist/index.js'
import { fmt, median, onCleanup, options, runMain, startDatabase, table } from '../lib/harness.mjs'
import { startRedis } from '../lib/redis.mjs'

const SYSTEMS = ['raw', 'chorus', 'redlock']
const NAME = 'bench-lock'

const opts = options('BENCH_LOCKS', {
  seconds: 3, // measured time per system per round
  rounds: 3,
  warmup: 300, // acquire+release pairs before measuring, per system per round
  only: '', // comma-separated subset of raw,chorus,redlock
  deadline: 170_000,
  json: false,
})

await runMain(
  async () => {
    const systems = opts.only ? opts.only.split(',') : SYSTEMS
    for (const s of systems) if (!SYSTEMS.includes(s)) throw new Error(`--only takes ${SYSTEMS.join(', ')}`)
    const db = await startDatabase()
    const runners = {}
    if (systems.includes('raw')) runners.raw = await rawRunner(db.url)
    if (systems.includes('chorus')) runners.chorus = await chorusRunner(db.url)
    if (systems.includes('redlock')) runners.redlock = await redlockRunner()
    const results = Object.fromEntries(systems.map((s) => [s, []]))
    for (let round = 0; round < opts.rounds; round++) {
      const order = round % 2 === 0 ? systems : [...systems].reverse()
      for (const s of order) {
        const r = await measure(runners[s])
        results[s].push(r)
        process.stderr.write(`round ${round + 1}: ${s.padEnd(8)} ${fmt(r.opsPerSec)} acquire+release/s\n`)
      }
    }
    report(systems, results)
  },
  { deadlineMs: opts.deadline },
)

async function measure(runner) {
  for (let i = 0; i < opts.warmup; i++) await runner.pair()
  const latencies = []
  const until = performance.now() + opts.seconds * 1000
  const t0 = performance.now()
  while (performance.now() < until) {
    const s = performance.now()
    await runner.pair()
    latencies.push(performance.now() - s)
  }
  const ms = performance.now() - t0
  latencies.sort((a, b) => a - b)
  return {
    ops: latencies.length,
    opsPerSec: (latencies.length * 1000) / ms,
    p50Us: latencies[Math.floor(latencies.length * 0.5)] * 1000,
    p99Us: latencies[Math.floor(latencies.length * 0.99)] * 1000,
  }
}

function report(systems, results) {
  const pick = (s) => {
    const rounds = results[s]
    const m = median(rounds.map((r) => r.opsPerSec))
    return rounds.find((r) => r.opsPerSec === m) ?? rounds[0]
  }
  const chosen = Object.fromEntries(systems.map((s) => [s, pick(s)]))
  const chorus = chosen.chorus?.opsPerSec
  const rows = systems.map((s) => [
    s,
    fmt(chosen[s].opsPerSec),
    fmt(chosen[s].p50Us),
    fmt(chosen[s].p99Us),
    chorus ? `${fmt(chorus / chosen[s].opsPerSec, 2)}×` : '–',
  ])
  process.stdout.write(`\nuncontended acquire+release, one caller, median of ${opts.rounds} rounds of ${opts.seconds} s\n\n`)
  process.stdout.write(table(['system', 'pairs/s', 'p50 µs', 'p99 µs', 'chorus ÷ system'], rows) + '\n')
  if (chorus && chosen.raw) {
    const ratio = chorus / chosen.raw.opsPerSec
    process.stdout.write(`\nChorus runs at ${fmt(ratio, 2)}× the raw advisory-lock pair (goal ≥ 0.50×) and carries a fencing token.\n`)
  }
  if (opts.json) process.stdout.write(JSON.stringify({ opts, results }) + '\n')
}

// ---- the systems ----------------------------------------------------------------------------

async function rawRunner(url) {
  const sql = postgres(url, { max: 1, onnotice: () => undefined })
  onCleanup(() => sql.end({ timeout: 1 }))
  await sql`select 1`
  const key = 42
  return {
    async pair() {
      await sql`select pg_advisory_lock(${key})`
      await sql`select pg_advisory_unlock(${key})`
    },
  }
}

async function chorusRunner(url) {
  const cluster = await createCluster({
    databaseUrl: url,
    instanceId: 'bench',
    preset: 'local',
    secret: 'bench-secret-0123456789abc',
    logLevel: 'warn',
  })
  onCleanup(() => cluster.close())
  let last = -1n
  return {
    async pair() {
      const lock = await cluster.locks.acquire(NAME)
      if (lock.token <= last) throw new Error(`token went back: ${lock.token} after ${last}`)
      last = lock.token
      await lock.release()
    },
  }
}

async function redlockRunner() {
  const { client } = await startRedis()
  const { default: Redlock } = await import('redlock')
  const redlock = new Redlock([client], { retryCount: 0, driftFactor: 0.01 })
  return {
    async pair() {
      const lock = await redlock.acquire([NAME], 10_000)
      await lock.release()
    },
  }
}
