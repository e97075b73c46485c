// Near-cache benchmark, two measurements in one run:
//   hit path      — cluster.cache(name).get(key) against a raw lru-cache LRUCache.get(key) with the
//                   same size, same keys, same loop, in one process; ops/s and the ratio (goal ≥ 0.8×).
//   invalidation  — a writer process calls cache.set(key) at a fixed rate; a peer process, which
//                   holds the key, records when the invalidation has been applied there. Latency
//                   = applied on the peer − set called on the writer, p50/p99 (goal p99 ≤ 10 ms).
//
//   node bench/cache/run.mjs [--seconds 2] [--rounds 3] [--keys 10000] [--messages 3000] [--rate 500]
//
// The same file is the writer and the peer: `run.mjs writer|peer`.
import { fileURLToPath } from 'node:url'
import { performance } from 'node:perf_hooks'
import { LRUCache } from 'lru-cache'
import { Child, fmt, machine, median, now, options, quantile, runMain, serveParent, sleep, startDatabase, table } from '../lib/harness.mjs'

const SCRIPT = fileURLToPath(import.meta.url)
const CACHE = 'bench-inval'

const role = process.argv[2]
if (role === 'writer') await writer()
else if (role === 'peer') await peer()
else await coordinator()

async function coordinator() {
  const opts = options('BENCH_CACHE', {
    seconds: 2, // measured time per system per round (hit path)
    rounds: 3,
    keys: 10_000,
    messages: 3_000, // invalidations measured
    rate: 500, // invalidations per second
    deadline: 170_000,
    json: false,
  })
  await runMain(
    async () => {
      const db = await startDatabase()
      const hits = await hitPath(db.url, opts)
      const inval = await invalidation(db.url, opts)
      report(hits, inval, opts, `${await db.describe()}\n${machine()}`)
    },
    { deadlineMs: opts.deadline },
  )
}

// ---- hit path --------------------------------------------------------------------------------

async function hitPath(url, o) {
  const { createCluster } = await import('../../dist/index.js')
  const cluster = await createCluster({ databaseUrl: url, instanceId: 'bench-hits', preset: 'local', logLevel: 'error' })
  try {
    const keys = Array.from({ length: o.keys }, (_, i) => `key:${i}`)
    const near = cluster.cache('bench-hits', { max: o.keys })
    const raw = new LRUCache({ max: o.keys })
    for (const [i, k] of keys.entries()) {
      await near.set(k, { i })
      raw.set(k, { i })
    }
    const systems = {
      'lru-cache': (k) => raw.get(k),
      chorus: (k) => near.get(k),
    }
    const results = { 'lru-cache': [], chorus: [] }
    for (let round = 0; round < o.rounds; round++) {
      const order = round % 2 === 0 ? Object.keys(systems) : Object.keys(systems).reverse()
      for (const name of order) {
        const opsPerSec = await loop(systems[name], keys, o.seconds)
        results[name].push(opsPerSec)
        process.stderr.write(`hit path round ${round + 1}: ${name.padEnd(9)} ${fmt(opsPerSec)} get/s\n`)
      }
    }
    return { raw: median(results['lru-cache']), chorus: median(results.chorus) }
  } finally {
    await cluster.close()
  }
}

/**
 * Calls `get` over the keys in slices of 100 000 calls until `seconds` of slice time have passed,
 * yielding to the event loop between slices (the instance must keep renewing its membership).
 */
async function loop(get, keys, seconds) {
  let sink = 0
  const n = keys.length
  for (let i = 0; i < 200_000; i++) sink += get(keys[i % n]) ? 1 : 0
  let ops = 0
  let ms = 0
  while (ms < seconds * 1000) {
    const t0 = performance.now()
    for (let i = 0; i < 100_000; i++) sink += get(keys[(ops + i) % n]) ? 1 : 0
    ms += performance.now() - t0
    ops += 100_000
    await new Promise((r) => setImmediate(r))
  }
  if (sink < 0) console.log(sink)
  return (ops * 1000) / ms
}

// ---- invalidation latency ----------------------------------------------------------------------

async function invalidation(url, o) {
  const env = { DATABASE_URL: url }
  const p = new Child(SCRIPT, ['peer'], env)
  const w = new Child(SCRIPT, ['writer'], env)
  try {
    await Promise.all([p.call({ cmd: 'setup', keys: o.messages }, 60_000), w.call({ cmd: 'setup' }, 60_000)])
    await w.call({ cmd: 'warmup', n: 200 })
    await sleep(300)
    await p.call({ cmd: 'arm', n: o.messages })
    const sent = await w.call({ cmd: 'paced', n: o.messages, rate: o.rate }, 600_000)
    await sleep(1000)
    const got = await p.call({ cmd: 'report' })
    const latencies = []
    let lost = 0
    for (let i = 0; i < o.messages; i++) {
      if (got.applied[i] > 0) latencies.push(got.applied[i] - sent.sentAt[i])
      else lost++
    }
    latencies.sort((x, y) => x - y)
    return {
      n: o.messages,
      lost,
      stillCached: got.stillCached,
      p50: quantile(latencies, 0.5),
      p90: quantile(latencies, 0.9),
      p99: quantile(latencies, 0.99),
      max: latencies.at(-1),
      offered: sent.offeredPerSecond,
    }
  } finally {
    await Promise.all([w.stop(), p.stop()])
  }
}

async function writer() {
  let cluster
  let cache
  serveParent({
    async setup() {
      const { createCluster } = await import('../../dist/index.js')
      cluster = await createCluster({ databaseUrl: process.env.DATABASE_URL, instanceId: 'bench-writer', preset: 'local', logLevel: 'error' })
      cache = cluster.cache(CACHE)
      return {}
    },
    async warmup({ n }) {
      for (let i = 0; i < n; i++) await cache.set(`warm:${i}`, i)
      return {}
    },
    async paced({ n, rate }) {
      const sentAt = new Array(n)
      const sends = []
      const interval = 1000 / rate
      const started = now()
      for (let i = 0; i < n; i++) {
        const due = started + i * interval
        const wait = due - now()
        if (wait > 1) await sleep(wait)
        sentAt[i] = now()
        sends.push(cache.set(`k${i}`, i))
      }
      const offeredPerSecond = (n * 1000) / (now() - started)
      await Promise.all(sends)
      return { sentAt, offeredPerSecond }
    },
    async stop() {
      await cluster?.close()
      setImmediate(() => process.exit(0))
      return {}
    },
  })
}

async function peer() {
  let cluster
  let cache
  let applied = new Float64Array(0)
  let count = 0
  serveParent({
    async setup({ keys }) {
      const { createCluster } = await import('../../dist/index.js')
      cluster = await createCluster({ databaseUrl: process.env.DATABASE_URL, instanceId: 'bench-peer', preset: 'local', logLevel: 'error' })
      cache = cluster.cache(CACHE)
      // Fill this instance's copy without telling peers.
      for (let i = 0; i < keys; i++) await cache.getOrLoad(`k${i}`, async () => -1)
      // Subscribed after the cache: handlers run in subscription order, so the cache has applied
      // the invalidation when this one runs.
      cluster.bus.subscribe(`chorus.cache.${CACHE}`, (data) => {
        const t = now()
        const msg = JSON.parse(data)
        for (const k of msg.d ?? []) {
          if (!k.startsWith('k')) continue
          const i = Number(k.slice(1))
          if (i < applied.length && applied[i] === 0) {
            applied[i] = t
            count++
          }
        }
      })
      return {}
    },
    async arm({ n }) {
      applied = new Float64Array(n)
      count = 0
      return {}
    },
    async report() {
      let stillCached = 0
      for (let i = 0; i < applied.length; i++) if (cache.has(`k${i}`)) stillCached++
      return { applied: Array.from(applied), count, stillCached }
    },
    async stop() {
      await cluster?.close()
      setImmediate(() => process.exit(0))
      return {}
    },
  })
}

// ---- report ------------------------------------------------------------------------------------

function report(hits, inval, o, environment) {
  const ratio = hits.chorus / hits.raw
  process.stdout.write(`\nNear-cache benchmark: ${fmt(o.keys)} keys; hit path median of ${o.rounds} rounds of ${o.seconds} s; ${fmt(inval.n)} invalidations at ${fmt(o.rate)}/s between two processes on one embedded PostgreSQL.\n${environment}\n\n`)
  process.stdout.write(
    table(
      ['system', 'hit get/s', 'ratio'],
      [
        ['lru-cache (raw)', fmt(hits.raw), '1.00'],
        ['chorus near cache', fmt(hits.chorus), fmt(ratio, 2)],
      ],
    ) + '\n\n',
  )
  process.stdout.write(
    table(
      ['invalidation', 'applied', 'lost', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms'],
      [['set on writer → applied on peer', fmt(inval.n - inval.lost), fmt(inval.lost), fmt(inval.p50, 2), fmt(inval.p90, 2), fmt(inval.p99, 2), fmt(inval.max, 1)]],
    ) + '\n',
  )
  process.stdout.write(
    `\nhit path Chorus/lru-cache = ${fmt(ratio, 2)}× (goal ≥ 0.8×: ${ratio >= 0.8 ? 'met' : 'NOT met'})\n` +
      `invalidation p99 = ${fmt(inval.p99, 2)} ms (goal ≤ 10 ms: ${inval.p99 <= 10 ? 'met' : 'NOT met'}); offered ${fmt(inval.offered)}/s; keys still cached on the peer after the run: ${inval.stillCached}\n`,
  )
  if (o.json) process.stdout.write(JSON.stringify({ hits, inval, ratio }) + '\n')
}
