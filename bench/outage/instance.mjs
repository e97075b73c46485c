// One instance of the outage benchmark: a cluster member that keeps every subsystem under steady
// load and records each attempt (start, end, success) or each observed effect, stamped on this
// machine's clock, for the coordinator to read with `collect`. It also serves STOMP on 127.0.0.1.
//
// Environment: DATABASE_URL, CHORUS_INSTANCE_ID, CHORUS_PRESET, CHORUS_SECRET, CHORUS_FILES_ROOT,
// BENCH_OUTAGE_INTERVAL (ms between attempts of each loop), BENCH_OUTAGE_IN_FLIGHT (most attempts
// of one loop unfinished at once; a tick finding that many skips its attempt).
import { createServer } from 'node:http'
import { createCluster } from '../../dist/index.js'
import { now, serveParent } from '../lib/harness.mjs'

const me = process.env.CHORUS_INSTANCE_ID
const intervalMs = Number(process.env.BENCH_OUTAGE_INTERVAL ?? 100)
const maxInFlight = Number(process.env.BENCH_OUTAGE_IN_FLIGHT ?? 20)
const TOPIC = '/topic/outage'

const server = createServer((_req, res) => res.writeHead(404).end())
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
const port = server.address().port

let cluster
try {
  cluster = await createCluster({ advertiseUrl: `http://127.0.0.1:${port}`, logLevel: process.env.CHORUS_LOG_LEVEL ?? 'silent' })
} catch (err) {
  process.send?.({ type: 'start-failed', message: err?.message ?? String(err) })
  process.exit(3)
}

// ---- records ----------------------------------------------------------------------------------

/** probe → [start, end, ok (1 | 0)] per attempt; observed effects have start = end and ok = 1. */
let records = {}
const record = (probe, t0, t1, ok) => (records[probe] ??= []).push([t0, t1, ok ? 1 : 0])
const observed = (probe) => {
  const t = now()
  record(probe, t, t, true)
}
/** Last error message per probe since the last `collect`, to say why a probe fails. */
const lastError = {}

const loops = []
const timers = []
/** probe → start times of its attempts still unfinished. */
const pending = {}

/**
 * Runs `fn` every `intervalMs`, open loop: a slow or hanging attempt does not delay the next, so the
 * first success after the database returns is seen within one interval of when it became possible.
 */
function attemptLoop(probe, fn) {
  const inFlight = new Set()
  pending[probe] = inFlight
  let seq = 0
  const tick = () => {
    if (inFlight.size >= maxInFlight) return
    const n = ++seq
    const t0 = now()
    inFlight.add(t0)
    Promise.resolve()
      .then(() => fn(n))
      .then(
        () => record(probe, t0, now(), true),
        (err) => {
          record(probe, t0, now(), false)
          lastError[probe] = `${err?.code ?? ''} ${err?.message ?? err}`.trim().slice(0, 200)
        },
      )
      .finally(() => inFlight.delete(t0))
  }
  loops.push({ probe, start: () => timers.push(setInterval(tick, intervalMs)) })
}

/** Samples `fn()` (true = success) every `ms`. */
function sampleLoop(probe, ms, fn) {
  loops.push({
    probe,
    start: () =>
      timers.push(
        setInterval(() => {
          const t = now()
          record(probe, t, t, fn())
        }, ms),
      ),
  })
}

// ---- membership -------------------------------------------------------------------------------

// A member again: renewing its lease under an epoch (after an outage longer than the fence time,
// that means isolated, then rejoined).
sampleLoop('membership', 25, () => cluster.members.self.state === 'up')
cluster.on('member:self:isolated', () => observed('membership:isolated'))
cluster.on('member:self:rejoined', () => observed('membership:rejoined'))

// ---- bus --------------------------------------------------------------------------------------

cluster.bus.subscribe('outage.bus', (_data, meta) => {
  if (!meta.local) observed('bus:deliver')
})
attemptLoop('bus:publish', (n) => cluster.bus.publish('outage.bus', `${me}|${n}`))
cluster.on('bus:connection:lost', () => observed('bus:lost'))
cluster.on('bus:connection:restored', () => observed('bus:restored'))

// ---- locks ------------------------------------------------------------------------------------

// Names nobody else holds: the time measured is the subsystem's, not a queue behind another holder.
attemptLoop('locks', async (n) => {
  const lock = await cluster.locks.acquire(`outage:${me}:${n}`, { waitMs: 5000 })
  await lock.release()
})

// ---- jobs, cron, singletons -------------------------------------------------------------------

cluster.jobs.define('outage-job', () => observed('jobs:run'), { retries: 10, backoff: { delayMs: 100, maxDelayMs: 1000 } })
attemptLoop('jobs:enqueue', (n) => cluster.jobs.enqueue('outage-job', { from: me, n }))
cluster.jobs.cron('outage-cron', '* * * * * *', () => observed('cron'))
cluster.on('cron:tick:enqueued', (e) => e.name === 'outage-cron' && observed('cron:enqueued'))
cluster.on('job:claim:lost', () => observed('jobs:claim-lost'))
cluster.on('job:requeued', () => observed('jobs:requeued'))
const singleton = cluster.singleton('outage-singleton', {
  start: (signal) => {
    observed('singleton:start')
    signal.addEventListener('abort', () => observed('singleton:stop'), { once: true })
  },
})
sampleLoop('singleton', 25, () => singleton.held)

// ---- map, cache, topics, reliable topics, sessions ----------------------------------------------

const map = cluster.map('outage')
attemptLoop('map', () => map.increment(`counter:${me}`))

// Each instance sets its own key; the peer counts the invalidations that reach it.
const cache = cluster.cache('outage')
attemptLoop('cache:set', (n) => cache.set(`k:${me}`, n))
let invalidations = cache.stats.invalidations
loops.push({
  probe: 'cache:invalidate',
  start: () =>
    timers.push(
      setInterval(() => {
        const seen = cache.stats.invalidations
        if (seen > invalidations) observed('cache:invalidate')
        invalidations = seen
      }, 20),
    ),
})

const topic = cluster.topic('outage')
topic.subscribe((_m, meta) => {
  if (!meta.local) observed('topic:deliver')
})
attemptLoop('topic:publish', (n) => topic.publish({ from: me, n }))

const reliable = cluster.reliableTopic('outage', { retention: { maxCount: 10_000 } })
await reliable.subscribe((_m, meta) => {
  if (meta.publisher !== me) observed('reliable:deliver')
})
attemptLoop('reliable:publish', (n) => reliable.publish({ from: me, n }))

const sessions = cluster.sessions.store()
// As express-session does per request: load the session, change it, save it.
attemptLoop('sessions', async (n) => {
  const sid = `outage-${me}-${n % 100}`
  const sess = (await sessions.read(sid)) ?? { cookie: { originalMaxAge: 600_000, expires: new Date(Date.now() + 600_000).toISOString() } }
  sess.n = n
  await sessions.write(sid, sess)
})

// ---- realtime ---------------------------------------------------------------------------------

cluster.realtime.attach(server, { authorize: (_p, action, dest) => action === 'subscribe' && dest === TOPIC, heartbeat: { send: 0, receive: 0 } })
attemptLoop('realtime:publish', (n) => cluster.realtime.publish(TOPIC, JSON.stringify({ from: me, n })))

// ---- files ------------------------------------------------------------------------------------

const area = cluster.files.area('outage')
attemptLoop('files', async (n) => {
  const path = `${me}/f${n % 1000}.txt`
  await area.write(path, `${me} ${n}\n`)
  const back = (await area.read(path)).toString()
  if (!back.startsWith(`${me} `)) throw new Error(`read back ${JSON.stringify(back)}`)
})

// ---- control ----------------------------------------------------------------------------------

let started = false
serveParent({
  /** Starts every loop (once) and forgets what was recorded so far. */
  async load() {
    if (!started) {
      started = true
      for (const l of loops) l.start()
    }
    records = {}
    return { probes: loops.map((l) => l.probe) }
  },
  /** Hands over (and forgets) everything recorded since the last call. */
  async collect() {
    const out = records
    records = {}
    const errors = { ...lastError }
    for (const k of Object.keys(lastError)) delete lastError[k]
    return { records: out, errors, pending: Object.fromEntries(Object.entries(pending).map(([p, set]) => [p, [...set]])) }
  },
  async state() {
    return { state: cluster.state, self: cluster.members.self.state, epoch: cluster.members.self.epoch }
  },
  async stop() {
    for (const t of timers) clearInterval(t)
    await Promise.race([cluster.close(), new Promise((r) => setTimeout(r, 5000))])
    setImmediate(() => process.exit(0))
    return {}
  },
})

process.send?.({ type: 'ready', id: me, port, heartbeatMs: cluster.options.heartbeatMs, failAfterMs: cluster.options.failAfterMs, preset: cluster.options.preset })
process.on('SIGTERM', () => process.exit(0))
