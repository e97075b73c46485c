// Session-store benchmark: the Chorus store (cluster.sessions.store()) against connect-pg-simple,
// both on the same embedded PostgreSQL in the same run, both called through the callback interface
// express-session uses, with the same session objects and the same number of calls in flight:
//   get      — load an existing session
//   insert   — save a new session
//   request  — what a request that changes its session costs: load, change one key, save
// Rounds alternate the order; the median round is reported with Chorus/connect-pg-simple ratios.
//
//   node bench/sessions/run.mjs [--seconds 3] [--rounds 3] [--concurrency 16] [--sessions 5000]
import { promisify } from 'node:util'
import { performance } from 'node:perf_hooks'
import session from 'express-session'
import connectPgSimple from 'connect-pg-simple'
import pg from 'pg'
import { createCluster } from '../../dist/index.js'
import { fmt, machine, median, onCleanup, options, runMain, startDatabase, table } from '../lib/harness.mjs'

const opts = options('BENCH_SESSIONS', {
  seconds: 3,
  rounds: 3,
  concurrency: 16, // calls in flight at once
  sessions: 5_000, // existing sessions that get and request pick from
  pool: 10, // connections per store (Chorus's work pool is 10 by default)
  deadline: 170_000,
  json: false,
})

const OPS = ['get', 'insert', 'request']

await runMain(
  async () => {
    const db = await startDatabase()
    const stores = {
      'connect-pg-simple': await pgSimpleStore(db.url),
      chorus: await chorusStore(db.url),
    }
    for (const [name, store] of Object.entries(stores)) {
      const set = promisify(store.set.bind(store))
      for (let i = 0; i < opts.sessions; i += 100) {
        await Promise.all(Array.from({ length: Math.min(100, opts.sessions - i) }, (_, j) => set(`s${i + j}`, sessionData(i + j))))
      }
      process.stderr.write(`${name}: ${fmt(opts.sessions)} sessions stored\n`)
    }
    const results = {}
    for (let round = 0; round < opts.rounds; round++) {
      const names = round % 2 === 0 ? Object.keys(stores) : Object.keys(stores).reverse()
      for (const name of names) {
        for (const op of OPS) {
          const r = await measure(stores[name], op, `${name}-${round}`)
          ;(results[`${name}|${op}`] ??= []).push(r)
          process.stderr.write(`round ${round + 1}: ${name.padEnd(17)} ${op.padEnd(7)} ${fmt(r)} ops/s\n`)
        }
      }
    }
    report(Object.keys(stores), results, `${await db.describe()}\n${machine()}`)
  },
  { deadlineMs: opts.deadline },
)

function sessionData(i) {
  return {
    cookie: { originalMaxAge: 3_600_000, expires: new Date(Date.now() + 3_600_000).toISOString(), httpOnly: true, path: '/' },
    user: { id: i, name: `user ${i}`, roles: ['student'] },
    csrf: 'a1b2c3d4e5f6a7b8c9d0',
    visits: 0,
  }
}

/** The session as express-session hands it to `set`: an object whose cookie has a live maxAge. */
function asLoaded(sess) {
  const c = sess.cookie
  return { ...sess, cookie: { ...c, get maxAge() { return new Date(c.expires).getTime() - Date.now() }, toJSON: () => c } }
}

async function measure(store, op, tag) {
  const get = promisify(store.get.bind(store))
  const set = promisify(store.set.bind(store))
  let n = 0
  const call =
    op === 'get'
      ? () => get(`s${(n * 7919) % opts.sessions}`)
      : op === 'insert'
        ? () => set(`new-${tag}-${n}`, sessionData(n))
        : async () => {
            const sid = `s${(n * 7919) % opts.sessions}`
            const sess = await get(sid)
            sess.visits = (sess.visits ?? 0) + 1
            await set(sid, asLoaded(sess))
          }
  const until = performance.now() + opts.seconds * 1000
  const t0 = performance.now()
  let done = 0
  await Promise.all(
    Array.from({ length: opts.concurrency }, async () => {
      while (performance.now() < until) {
        n++
        await call()
        done++
      }
    }),
  )
  return (done * 1000) / (performance.now() - t0)
}

async function chorusStore(url) {
  const cluster = await createCluster({ databaseUrl: url, instanceId: 'bench-sessions', preset: 'local', logLevel: 'error', poolSize: opts.pool })
  onCleanup(() => cluster.close())
  return cluster.sessions.store({ session })
}

async function pgSimpleStore(url) {
  const PgStore = connectPgSimple(session)
  const pool = new pg.Pool({ connectionString: url, max: opts.pool })
  const store = new PgStore({ pool, createTableIfMissing: true, pruneSessionInterval: false })
  onCleanup(async () => {
    store.close()
    await pool.end()
  })
  // connect-pg-simple creates its table on the first call; wait for it.
  await promisify(store.get.bind(store))('warm-up')
  return store
}

function report(names, results, environment) {
  process.stdout.write(
    `\nSession-store benchmark: ${opts.concurrency} calls in flight, ${fmt(opts.sessions)} stored sessions, ${opts.pool} connections per store; median of ${opts.rounds} rounds of ${opts.seconds} s per operation. One process, one embedded PostgreSQL.\n${environment}\n\n`,
  )
  const rows = OPS.map((op) => {
    const base = median(results[`connect-pg-simple|${op}`])
    const chorus = median(results[`chorus|${op}`])
    return [op, fmt(base), fmt(chorus), fmt(chorus / base, 2)]
  })
  process.stdout.write(table(['operation', 'connect-pg-simple ops/s', 'chorus ops/s', 'chorus / connect-pg-simple'], rows) + '\n')
  process.stdout.write(
    '\nrequest = get, change one key, set. Chorus writes with a version check (one UPDATE when nobody wrote in between) so that concurrent\n' +
      'writers merge instead of losing keys; connect-pg-simple overwrites the whole session (last writer wins).\n',
  )
  if (opts.json) process.stdout.write(JSON.stringify({ names, results }) + '\n')
}
