// Two builds of Chorus side by side: the same operations through this repository's `dist/` and
// through another build's (`--base DIR`, a checkout with its own `dist/`, e.g. a `git worktree` of
// an earlier commit built with `node scripts/build.mjs`), in ONE process on one embedded
// PostgreSQL (a database each). The two take turns in short slices (`--slice-ms`, the order
// alternating), so whatever else the machine does weighs on both alike: on a busy machine the
// ratio new ÷ base stays readable when the absolute figures do not.
//
// Operations, each closed-loop with `--concurrency` calls in flight:
//   lock      — locks.acquire(name) + release() on one name (concurrency 1: one lock holder)
//   map.get / map.set / map.increment — a shared map over `--keys` keys
//   cache.get — a near-cache hit
//   session.get / session.set — the express-session store
//   bus       — bus.publish to a channel this instance subscribes to, until it is received
//   job       — jobs.enqueue of a no-op job (enqueue only)
//   rpc       — rpc.call to this instance (validation, codec, handler: a call to oneself stays in process)
//
//   node bench/compare/run.mjs --base /tmp/old [--rounds 5] [--slice-ms 500] [--only lock,map.get]
import { loadavg } from 'node:os'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import postgres from 'postgres'
import { fmt, machine, median, now, onCleanup, options, runMain, sleep, startDatabase, table } from '../lib/harness.mjs'

const OPS = ['lock', 'map.get', 'map.set', 'map.increment', 'cache.get', 'session.get', 'session.set', 'bus', 'job', 'rpc']

const opts = options('BENCH_COMPARE', {
  base: '', // a checkout whose dist/ is the base build (required)
  rounds: 5, // slices per build per operation
  'slice-ms': 500,
  concurrency: 8,
  keys: 1000,
  only: '', // comma-separated subset of the operations
  deadline: 400_000,
  json: false,
})
if (!opts.base) throw new Error('--base DIR is required: a checkout of the build to compare against, with dist/ built')
const ops = opts.only ? opts.only.split(',').map((s) => s.trim()) : OPS
for (const op of ops) if (!OPS.includes(op)) throw new Error(`--only takes a subset of ${OPS.join(',')}`)

await runMain(async () => {
  const db = await startDatabase()
  const admin = postgres(db.url, { max: 1, onnotice: () => undefined })
  await admin`create database chorus_base`
  await admin`create database chorus_new`
  await admin.end()
  const urlOf = (name) => db.url.replace(/\/[^/?]*(\?|$)/, `/${name}$1`)
  const builds = {
    base: await setUp(pathToFileURL(resolve(opts.base, 'dist/index.js')).href, urlOf('chorus_base'), 'base'),
    new: await setUp(new URL('../../dist/index.js', import.meta.url).href, urlOf('chorus_new'), 'new'),
  }
  process.stdout.write(`\nTwo builds side by side: new = this repository's dist/, base = ${opts.base}/dist/.\n${machine()}\n${await db.describe()}\n`)
  process.stdout.write(`${opts.rounds} slices of ${opts['slice-ms']} ms per build and operation, taking turns; ${opts.concurrency} calls in flight (lock: 1).\n\n`)
  const results = {}
  for (const op of ops) {
    results[op] = { base: [], new: [] }
    for (let round = 0; round < opts.rounds; round++) {
      const order = round % 2 === 0 ? ['base', 'new'] : ['new', 'base']
      for (const b of order) results[op][b].push(await slice(builds[b].ops[op], op === 'lock' ? 1 : opts.concurrency))
    }
    const m = { base: median(results[op].base), new: median(results[op].new) }
    process.stderr.write(`${op.padEnd(14)} base ${fmt(m.base)}/s  new ${fmt(m.new)}/s  new÷base ${(m.new / m.base).toFixed(2)}  (load ${loadavg()[0].toFixed(2)})\n`)
  }
  const rows = ops.map((op) => {
    const b = median(results[op].base)
    const n = median(results[op].new)
    return [op, fmt(b), fmt(n), `${(n / b).toFixed(2)}×`]
  })
  process.stdout.write(`${table(['operation', 'base ops/s', 'new ops/s', 'new ÷ base'], rows)}\n`)
  process.stdout.write(`\nMedian of ${opts.rounds} slices each. Load average at the end: ${loadavg().map((l) => l.toFixed(2)).join(' ')}.\n`)
  if (opts.json) process.stdout.write(`${JSON.stringify({ results, load: loadavg() })}\n`)
}, { deadlineMs: opts.deadline })

/** One build's cluster and its operations, each an async function doing one call. */
async function setUp(moduleUrl, databaseUrl, name) {
  const { createCluster } = await import(moduleUrl)
  const cluster = await createCluster({
    databaseUrl, instanceId: `compare-${name}`, preset: 'local', secret: 'compare-secret-0123456789abcdef', logLevel: 'error',
  })
  onCleanup(() => cluster.close())
  cluster.rpc.handle('echo', (payload) => payload)
  const map = cluster.map('compare')
  const cache = cluster.cache('compare')
  const store = cluster.sessions.store({ session: await sessionModule() })
  const get = (sid) => new Promise((res, rej) => store.get(sid, (err, s) => (err ? rej(err) : res(s))))
  const set = (sid, s) => new Promise((res, rej) => store.set(sid, s, (err) => (err ? rej(err) : res())))
  for (let i = 0; i < opts.keys; i++) {
    await map.set(`k${i}`, { i })
    await cache.set(`k${i}`, { i })
    await cache.get(`k${i}`)
  }
  for (let i = 0; i < opts.keys; i += 100) await Promise.all(Array.from({ length: 100 }, (_, j) => set(`s${i + j}`, session(i + j))))
  cluster.jobs.define('compare-noop', async () => undefined)
  const waiting = new Map()
  let seq = 0
  await cluster.bus.subscribe('compare', (data) => {
    waiting.get(data)?.()
    waiting.delete(data)
  })
  let n = 0
  const key = () => `k${(n++ * 7919) % opts.keys}`
  const sid = () => `s${(n++ * 7919) % opts.keys}`
  return {
    cluster,
    ops: {
      lock: async () => (await cluster.locks.acquire('compare')).release(),
      'map.get': () => map.get(key()),
      'map.set': () => map.set(key(), { n }),
      'map.increment': () => map.increment('counter:' + key()),
      'cache.get': () => cache.get(key()),
      'session.get': () => get(sid()),
      'session.set': () => set(sid(), session(n)),
      bus: () =>
        new Promise((res, rej) => {
          const id = `${name}:${seq++}`
          waiting.set(id, res)
          cluster.bus.publish('compare', id).catch(rej)
        }),
      job: () => cluster.jobs.enqueue('compare-noop', { n }),
      rpc: () => cluster.rpc.call(`compare-${name}`, 'echo', { n }),
    },
  }
}

async function sessionModule() {
  const { default: session } = await import('express-session')
  return session
}

function session(i) {
  return { cookie: { originalMaxAge: 3_600_000, expires: new Date(Date.now() + 3_600_000).toISOString(), httpOnly: true, path: '/' }, user: `user${i}`, cart: [i, i + 1] }
}

/** Calls `fn` with `concurrency` in flight for one slice; resolves with calls completed per second. */
async function slice(fn, concurrency) {
  const ms = opts['slice-ms']
  const until = now() + ms
  let done = 0
  const started = now()
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (now() < until) {
        await fn()
        done++
      }
    }),
  )
  const elapsed = now() - started
  await sleep(20)
  return (done * 1000) / elapsed
}
