// The dashboard of the outage benchmark, in a process of its own as `chorus up` and `chorus
// dashboard` run it: it serves the JSON API on 127.0.0.1 and polls it, recording each new view's
// read time (the moment the dashboard last read the database) and whether it shows every instance up.
//
// Environment: DATABASE_URL, BENCH_OUTAGE_INSTANCES (how many instances make the cluster).
import { startDashboard } from '../../dist/dashboard/dashboard.js'
import { createLogger } from '../../dist/log.js'
import { now, serveParent } from '../lib/harness.mjs'

const instances = Number(process.env.BENCH_OUTAGE_INSTANCES ?? 2)
const POLL_MS = 25

const dashboard = await startDashboard({
  databaseUrl: process.env.DATABASE_URL,
  password: 'outage-bench-password',
  port: 0,
  log: createLogger(process.env.CHORUS_LOG_LEVEL ?? 'silent', { instance: 'dashboard' }),
})

let records = {}
const record = (probe, t0, t1, ok) => (records[probe] ??= []).push([t0, t1, ok ? 1 : 0])
const lastError = {}
// The view's `at` is this process's Date.now() when the view was composed; on the benchmark clock:
const toBenchClock = (ms) => ms + (now() - Date.now())

let lastAt = null
let polling = false
const timer = setInterval(async () => {
  if (polling) return
  polling = true
  const t0 = now()
  try {
    const res = await fetch(`${dashboard.url}/api/overview`, { headers: { authorization: `Bearer ${dashboard.token}` }, signal: AbortSignal.timeout(5000) })
    const body = await res.json()
    if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${JSON.stringify(body).slice(0, 200)}`)
    record('dashboard:http', t0, now(), true)
    if (body.at !== lastAt) {
      lastAt = body.at
      const at = toBenchClock(Date.parse(body.at))
      // A new view: the dashboard read the database successfully at `at`.
      record('dashboard:read', at, at, true)
      const c = body.counts
      record('dashboard:all-up', at, at, c.up === instances && c.isolated === 0 && c.draining === 0)
    }
  } catch (err) {
    record('dashboard:http', t0, now(), false)
    lastError['dashboard:http'] = String(err?.message ?? err).slice(0, 200)
  } finally {
    polling = false
  }
}, POLL_MS)

serveParent({
  async load() {
    records = {}
    return {}
  },
  async collect() {
    const out = records
    records = {}
    const errors = { ...lastError }
    for (const k of Object.keys(lastError)) delete lastError[k]
    return { records: out, errors }
  },
  async stop() {
    clearInterval(timer)
    await Promise.race([dashboard.close(), new Promise((r) => setTimeout(r, 5000))])
    setImmediate(() => process.exit(0))
    return {}
  },
})
process.send?.({ type: 'ready', url: dashboard.url })
process.on('SIGTERM', () => process.exit(0))
