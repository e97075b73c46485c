// Shared-map benchmark: cluster.map(name) get / set / increment against a local Redis through
// ioredis GET / SET / INCR as a reference row, in one process, with the same keys, values and
// number of calls in flight. Redis keeps everything in memory and acknowledges before any disk
// write; the Chorus map is a durable, versioned PostgreSQL table — the ratio shows what that costs.
// Rounds alternate the order; the median round is reported.
//
//   node bench/map/run.mjs [--seconds 3] [--rounds 3] [--concurrency 16] [--keys 1000]
import { performance } from 'node:perf_hooks'
import { createCluster } from '../../dist/index.js'
import { fmt, machine, median, onCleanup, options, runMain, startDatabase, table } from '../lib/harness.mjs'
import { startRedis } from '../lib/redis.mjs'

const opts = options('BENCH_MAP', {
  seconds: 3,
  rounds: 3,
  concurrency: 16, // calls in flight at once
  keys: 1_000,
  deadline: 170_000,
  json: false,
})

const OPS = ['get', 'set', 'increment']
const VALUE = { title: 'Quiz 12', open: true, questions: 20, tags: ['algebra', 'week-3'] }

await runMain(
  async () => {
    const db = await startDatabase()
    const cluster = await createCluster({ databaseUrl: db.url, instanceId: 'bench-map', preset: 'local', logLevel: 'error' })
    onCleanup(() => cluster.close())
    const map = cluster.map('bench')
    const { client: redis } = await startRedis()
    const keys = Array.from({ length: opts.keys }, (_, i) => `quiz:${i}`)
    const text = JSON.stringify(VALUE)
    for (const k of keys) {
      await map.set(k, VALUE)
      await redis.set(k, text)
    }
    const systems = {
      redis: {
        get: (k) => redis.get(k).then((t) => JSON.parse(t)),
        set: (k) => redis.set(k, JSON.stringify(VALUE)),
        increment: (k) => redis.incr(`n:${k}`),
      },
      chorus: {
        get: (k) => map.get(k),
        set: (k) => map.set(k, VALUE),
        increment: (k) => map.increment(`n:${k}`),
      },
    }
    const results = {}
    for (let round = 0; round < opts.rounds; round++) {
      const names = round % 2 === 0 ? Object.keys(systems) : Object.keys(systems).reverse()
      for (const name of names) {
        for (const op of OPS) {
          const r = await measure(systems[name][op], keys)
          ;(results[`${name}|${op}`] ??= []).push(r)
          process.stderr.write(`round ${round + 1}: ${name.padEnd(6)} ${op.padEnd(9)} ${fmt(r)} ops/s\n`)
        }
      }
    }
    report(results, `${await db.describe()}\n${machine()}`)
  },
  { deadlineMs: opts.deadline },
)

async function measure(call, keys) {
  let n = 0
  let done = 0
  const until = performance.now() + opts.seconds * 1000
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: opts.concurrency }, async () => {
      while (performance.now() < until) {
        await call(keys[(n++ * 7919) % keys.length])
        done++
      }
    }),
  )
  return (done * 1000) / (performance.now() - t0)
}

function report(results, environment) {
  process.stdout.write(
    `\nShared-map benchmark: ${opts.concurrency} calls in flight over ${fmt(opts.keys)} keys; median of ${opts.rounds} rounds of ${opts.seconds} s per operation. ` +
      `One process; Chorus on an embedded PostgreSQL (work pool of 10), Redis on 127.0.0.1 through one ioredis connection.\n${environment}\n\n`,
  )
  const rows = OPS.map((op) => {
    const r = median(results[`redis|${op}`])
    const c = median(results[`chorus|${op}`])
    return [op, fmt(r), fmt(c), fmt(c / r, 2)]
  })
  process.stdout.write(table(['operation', 'redis ops/s (reference)', 'chorus ops/s', 'chorus / redis'], rows) + '\n')
  if (opts.json) process.stdout.write(JSON.stringify({ results }) + '\n')
}
