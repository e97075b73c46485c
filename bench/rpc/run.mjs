// RPC benchmark, side by side in one run against the same member processes:
//   chorus call  — cluster.rpc.call(member, 'echo', payload): signed request, nonce and window
//                  checks, signed answer, deadline
//   plain        — an undici POST of the same JSON to a plain route of the same HTTP server
//   broadcast    — cluster.rpc.broadcast('echo', payload) to 3 member processes (not this one)
// Calls run one at a time (round-trip latency) and then --concurrency at once (throughput).
// Rounds alternate the order of chorus and plain; the median round is reported.
//
//   node bench/rpc/run.mjs [--seconds 3] [--rounds 3] [--members 3] [--concurrency 16] [--size 200]
import { performance } from 'node:perf_hooks'
import { Agent, request } from 'undici'
import { createCluster } from '../../dist/index.js'
import { Child, fmt, machine, median, onCleanup, options, quantile, runMain, startDatabase, table } from '../lib/harness.mjs'

const opts = options('BENCH_RPC', {
  seconds: 3, // measured time per system per round
  rounds: 3,
  members: 3,
  concurrency: 16,
  size: 200, // bytes of payload
  warmup: 300,
  deadline: 170_000,
  json: false,
})
const SECRET = 'bench-secret-0123456789abc'

await runMain(
  async () => {
    const db = await startDatabase()
    process.stdout.write(`${machine()}\n${await db.describe()}\n`)
    const env = { DATABASE_URL: db.url, CHORUS_SECRET: SECRET, CHORUS_PRESET: 'local' }
    const members = []
    for (let i = 1; i <= opts.members; i++) {
      const child = new Child(new URL('./member.mjs', import.meta.url).pathname, [], { ...env, CHORUS_INSTANCE_ID: `m${i}` })
      members.push(child.waitFor((m) => m.type === 'ready', 60_000, 'ready').then((m) => ({ child, ...m })))
    }
    const ready = await Promise.all(members)
    const caller = await createCluster({ databaseUrl: db.url, instanceId: 'caller', preset: 'local', secret: SECRET, logLevel: 'warn' })
    onCleanup(() => caller.close())
    while (!ready.every((m) => caller.members.isLive(m.id))) await new Promise((r) => setTimeout(r, 50))
    const target = ready[0]
    const payload = { data: 'x'.repeat(Math.max(0, opts.size - 11)) }
    const body = JSON.stringify(payload)
    const agent = new Agent({ keepAliveTimeout: 10_000 })
    onCleanup(() => agent.close())

    const systems = {
      chorus: async () => {
        const r = await caller.rpc.call(target.id, 'echo', payload)
        if (r.data.length !== payload.data.length) throw new Error('bad echo')
      },
      plain: async () => {
        const res = await request(`http://127.0.0.1:${target.port}/plain`, { method: 'POST', body, headers: { 'content-type': 'application/json' }, dispatcher: agent })
        const r = await res.body.json()
        if (r.result.data.length !== payload.data.length) throw new Error('bad echo')
      },
      broadcast: async () => {
        const r = await caller.rpc.broadcast('echo', payload, { includeSelf: false })
        if (Object.keys(r.results).length !== opts.members) throw new Error(`broadcast: ${JSON.stringify({ errors: r.errors, missing: r.missing })}`)
      },
    }
    const results = { chorus: [], plain: [], 'chorus ×16': [], 'plain ×16': [], broadcast: [] }
    for (let round = 0; round < opts.rounds; round++) {
      const order = round % 2 === 0 ? ['chorus', 'plain'] : ['plain', 'chorus']
      for (const s of order) {
        results[s].push(await measure(systems[s], 1))
        results[`${s} ×${opts.concurrency}`] ??= []
        results[`${s} ×${opts.concurrency}`].push(await measure(systems[s], opts.concurrency))
      }
      results.broadcast.push(await measure(systems.broadcast, 1))
      process.stderr.write(`round ${round + 1}: ${Object.entries(results).map(([k, v]) => `${k} ${fmt(v.at(-1)?.p50Us)} µs`).join(', ')}\n`)
    }
    report(results)
  },
  { deadlineMs: opts.deadline },
)

/** Runs `op` with `concurrency` callers for --seconds after a warm-up; ops/s and latency quantiles. */
async function measure(op, concurrency) {
  for (let i = 0; i < opts.warmup; i++) await op()
  const latencies = []
  const until = performance.now() + opts.seconds * 1000
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < until) {
        const s = performance.now()
        await op()
        latencies.push(performance.now() - s)
      }
    }),
  )
  const ms = performance.now() - t0
  latencies.sort((a, b) => a - b)
  return { ops: latencies.length, opsPerSec: (latencies.length * 1000) / ms, p50Us: quantile(latencies, 0.5) * 1000, p99Us: quantile(latencies, 0.99) * 1000 }
}

function report(results) {
  const pick = (rounds) => {
    const m = median(rounds.map((r) => r.opsPerSec))
    return rounds.find((r) => r.opsPerSec === m) ?? rounds[0]
  }
  const chosen = Object.fromEntries(Object.entries(results).filter(([, v]) => v.length > 0).map(([k, v]) => [k, pick(v)]))
  const c = `×${opts.concurrency}`
  const rows = Object.entries(chosen).map(([k, r]) => [k, fmt(r.opsPerSec), fmt(r.p50Us), fmt(r.p99Us)])
  process.stdout.write(`\n${opts.size}-byte payload, median of ${opts.rounds} rounds of ${opts.seconds} s; broadcast to ${opts.members} member processes\n\n`)
  process.stdout.write(table(['system', 'calls/s', 'p50 µs', 'p99 µs'], rows) + '\n\n')
  const one = chosen.chorus.p50Us / chosen.plain.p50Us
  const many = chosen[`plain ${c}`].opsPerSec / chosen[`chorus ${c}`].opsPerSec
  process.stdout.write(`call round trip p50: chorus/plain = ${fmt(one, 2)}×; throughput at ${opts.concurrency} in flight: plain/chorus = ${fmt(many, 2)}×\n`)
  process.stdout.write(`broadcast to ${opts.members} members: p50 ${fmt(chosen.broadcast.p50Us / 1000, 2)} ms, p99 ${fmt(chosen.broadcast.p99Us / 1000, 2)} ms\n`)
  if (opts.json) process.stdout.write(JSON.stringify({ opts, results }) + '\n')
}
