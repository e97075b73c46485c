// Hot-counter benchmark: many writers on ONE key. cluster.counter(name).add (per-instance shards,
// group-commit batching) against one hot cluster.map(name).increment key (one row lock, one commit
// per increment) and Redis INCR through ioredis as the in-memory reference. Three cluster
// instances in one process share the writers, as three app servers would. Every call waits for its
// acknowledgement; the final totals are checked exact. Rounds alternate the order; the median
// round is reported, with the load average.
//
//   node bench/counter/run.mjs [--seconds 3] [--rounds 3] [--concurrency 200]
import { performance } from 'node:perf_hooks'
import { createCluster } from '../../dist/index.js'
import { fmt, machine, median, onCleanup, options, runMain, startDatabase, table } from '../lib/harness.mjs'
import { startRedis } from '../lib/redis.mjs'

const opts = options('BENCH_COUNTER', {
  seconds: 3,
  rounds: 3,
  concurrency: 200, // writers in flight at once, spread over the instances
  instances: 3,
  deadline: 170_000,
  json: false,
})

await runMain(
  async () => {
    const db = await startDatabase()
    const clusters = []
    for (let i = 0; i < opts.instances; i++) {
      const c = await createCluster({ databaseUrl: db.url, instanceId: `bench-counter-${i}`, preset: 'local', logLevel: 'error' })
      onCleanup(() => c.close())
      clusters.push(c)
    }
    const { client: redis } = await startRedis()
    let round = 0
    const systems = {
      'chorus counter': {
        call: (i) => clusters[i % clusters.length].counter('bench').add(`hot:${round}`),
        total: () => clusters[0].counter('bench').get(`hot:${round}`),
      },
      'chorus map.increment': {
        call: (i) => clusters[i % clusters.length].map('bench').increment(`hot:${round}`),
        total: async () => (await clusters[0].map('bench').get(`hot:${round}`)) ?? 0,
      },
      'redis INCR': {
        call: () => redis.incr(`hot:${round}`),
        total: async () => Number(await redis.get(`hot:${round}`)),
      },
    }
    const results = {}
    for (let r = 0; r < opts.rounds; r++) {
      const names = r % 2 === 0 ? Object.keys(systems) : Object.keys(systems).reverse()
      for (const name of names) {
        round++
        const { rate, done } = await measure(systems[name].call)
        const total = await systems[name].total()
        if (total !== done) throw new Error(`${name}: ${done} increments acknowledged but the total is ${total}`)
        ;(results[name] ??= []).push(rate)
        process.stderr.write(`round ${r + 1}: ${name.padEnd(22)} ${fmt(rate)} increments/s (total ${fmt(total)} exact)\n`)
      }
    }
    report(results, `${await db.describe()}\n${machine()}`)
  },
  { deadlineMs: opts.deadline },
)

async function measure(call) {
  let done = 0
  const until = performance.now() + opts.seconds * 1000
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: opts.concurrency }, async (_, i) => {
      while (performance.now() < until) {
        await call(i)
        done++
      }
    }),
  )
  return { rate: (done * 1000) / (performance.now() - t0), done }
}

function report(results, environment) {
  process.stdout.write(
    `\nHot-counter benchmark: ${opts.concurrency} writers in flight on one key, over ${opts.instances} instances in one process; median of ${opts.rounds} rounds of ${opts.seconds} s. ` +
      `Every increment acknowledged; totals checked exact.\n${environment}\n\n`,
  )
  const counter = median(results['chorus counter'])
  const rows = Object.keys(results).map((name) => {
    const m = median(results[name])
    return [name, fmt(m), fmt(counter / m, 2)]
  })
  process.stdout.write(table(['system', 'increments/s', 'chorus counter ×'], rows) + '\n')
  if (opts.json) process.stdout.write(JSON.stringify({ results }) + '\n')
}
