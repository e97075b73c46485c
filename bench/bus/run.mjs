// Bus benchmark: the Chorus bus against a plain "one NOTIFY per message" loop (the `postgres`
// package's sql.notify / sql.listen), on the same embedded PostgreSQL in the same run, each with a
// publisher process and a receiver process; and the Chorus bus on its Redis and NATS transports
// (`chorus-redis`, `chorus-nats`: a local redis-server and nats-server started here, each Chorus
// system its own cluster in its own schema). Two measurements per system:
//   throughput — N messages offered as fast as the system takes them (a bounded window of
//                unfinished sends), messages/s from the first send to the last receive;
//   latency    — N messages at a fixed offered rate both sustain; publish→receive p50/p99 from a
//                timestamp carried in each payload.
// Each measurement is cut into slices that alternate between the systems (raw, chorus, …, chorus,
// raw, …), so load from elsewhere on the machine weighs on all alike. CPU per message is accounted
// for the publisher, the receiver, PostgreSQL and the broker (redis-server, nats-server).
//
//   node bench/bus/run.mjs [--messages 50000] [--size 100] [--rate 2000] [--window 1000] …
//   node bench/bus/run.mjs --help
//
// The same file is the publisher and the receiver: `run.mjs publisher|receiver chorus|raw`.
import { loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { processCpuMs } from '../lib/cpu.mjs'
import { Child, fmt, machine, now, options, quantile, runMain, serveParent, sleep, startDatabase, table } from '../lib/harness.mjs'
import { startNats } from '../lib/nats.mjs'
import { startRedis } from '../lib/redis.mjs'

const SCRIPT = fileURLToPath(import.meta.url)
const CHORUS_CHANNEL = 'bench'
const RAW_CHANNEL = 'bench_raw'
const SYSTEMS = ['raw', 'chorus', 'chorus-redis', 'chorus-nats']
/** The broker a system uses besides PostgreSQL, if any. */
const brokerOf = (system) => (system === 'chorus-redis' ? 'redis' : system === 'chorus-nats' ? 'nats' : null)

const role = process.argv[2]
if (role === 'publisher') await publisher(process.argv[3])
else if (role === 'receiver') await receiver(process.argv[3])
else await coordinator()

// ---- the coordinator -------------------------------------------------------------------------

async function coordinator() {
  const opts = options('BENCH_BUS', {
    messages: 50_000, // per measurement and system
    'latency-messages': 0, // 0: same as --messages
    size: 100, // payload bytes
    rate: 2_000, // offered messages/s in the latency measurement
    window: 1_000, // most unfinished sends at once in the throughput measurement
    // Connections of the raw publisher. One keeps per-publisher order, as the Chorus bus does, and
    // is also the fastest setting on a small machine; more connections reorder messages.
    'raw-pool': 1,
    slices: 10, // each measurement is cut into this many slices per system, alternating systems
    warmup: 2_000, // messages sent and discarded by each system before measuring
    only: '', // comma-separated subset of raw,chorus,chorus-redis,chorus-nats
    grace: 10_000, // ms to wait for stragglers once a slice is sent
    deadline: 170_000, // ms before the whole run is stopped
    json: false, // also print the results as one JSON line
    profile: '', // a directory: write V8 CPU profiles of the publishers and receivers there
  })
  if (opts.size < 40) throw new Error('--size must be at least 40 (the payload carries a sequence number and a timestamp)')
  if (!(opts.slices >= 1)) throw new Error('--slices must be at least 1')
  const systems = opts.only ? opts.only.split(',').map((s) => s.trim()) : SYSTEMS
  for (const s of systems) if (!SYSTEMS.includes(s)) throw new Error(`--only takes a subset of ${SYSTEMS.join(',')}`)
  const o = { ...opts, latencyMessages: opts['latency-messages'] || opts.messages, systems }

  await runMain(
    async () => {
      const startLoad = loadavg()[0].toFixed(2)
      const db = await startDatabase()
      process.stderr.write(`${await db.describe()}\n`)
      const brokers = {
        redis: systems.some((s) => brokerOf(s) === 'redis') ? await startRedis() : null,
        nats: systems.some((s) => brokerOf(s) === 'nats') ? await startNats() : null,
      }
      const rows = await measure(db, brokers, o)
      const where = [brokers.redis && `redis-server on 127.0.0.1:${brokers.redis.port} without persistence`, brokers.nats && `nats-server on 127.0.0.1:${brokers.nats.port}`].filter(Boolean)
      report(rows, { ...o, environment: `${await db.describe()}${where.length ? `; ${where.join('; ')}` : ''}\n${machine()} at the end (1-minute load ${startLoad} at the start)` })
    },
    { deadlineMs: opts.deadline },
  )
}

/** Starts a publisher and a receiver per system, then runs each measurement in alternating slices. */
async function measure(db, brokers, o) {
  const envOf = (system) => ({ DATABASE_URL: db.url, BENCH_RAW_POOL: String(o['raw-pool']), BENCH_BUS_URL: brokers[brokerOf(system)]?.url ?? '' })
  const profile = (system, role) => (o.profile ? ['--cpu-prof', '--cpu-prof-dir', o.profile, '--cpu-prof-name', `${system}-${role}.cpuprofile`] : [])
  const pairs = {}
  for (const system of o.systems) {
    pairs[system] = {
      receiver: new Child(SCRIPT, ['receiver', system], envOf(system), profile(system, 'receiver')),
      publisher: new Child(SCRIPT, ['publisher', system], envOf(system), profile(system, 'publisher')),
      broker: brokers[brokerOf(system)] ?? null,
    }
  }
  try {
    await Promise.all(Object.values(pairs).flatMap((p) => [p.receiver.call({ cmd: 'setup' }, 60_000), p.publisher.call({ cmd: 'setup' }, 60_000)]))
    const phases = [
      { name: 'throughput', n: o.messages, send: { cmd: 'blast', window: o.window } },
      { name: `latency @ ${fmt(o.rate)}/s`, n: o.latencyMessages, send: { cmd: 'paced', rate: o.rate } },
    ]
    if (o.warmup > 0) {
      process.stderr.write('warm-up …\n')
      await runPhase(pairs, db, o, { name: 'warmup', n: o.warmup, send: { cmd: 'blast', window: o.window } }, 1)
    }
    const rows = []
    for (const phase of phases) {
      process.stderr.write(`${phase.name}: ${o.slices} slice${o.slices === 1 ? '' : 's'} per system …\n`)
      rows.push(...(await runPhase(pairs, db, o, phase, o.slices)))
    }
    return rows
  } finally {
    await Promise.all(Object.values(pairs).flatMap((p) => [p.publisher.stop(), p.receiver.stop()]))
  }
}

/** Sends `phase.n` messages per system in `slices` slices, alternating systems; one row per system. */
async function runPhase(pairs, db, o, phase, slices) {
  const acc = {}
  for (const system of o.systems) {
    await pairs[system].receiver.call({ cmd: 'arm', n: phase.n })
    acc[system] = { seconds: 0, received: 0, pubCpuUs: 0, recvCpuUs: 0, dbCpuMs: 0, dbKnown: true, brokerCpuMs: 0, brokerKnown: !!pairs[system].broker, failed: 0, sendMs: 0, maxLagMs: 0, load: 0 }
  }
  for (let k = 0; k < slices; k++) {
    const order = k % 2 === 0 ? o.systems : [...o.systems].reverse()
    for (const system of order) {
      const { receiver, publisher, broker } = pairs[system]
      const from = Math.floor((k * phase.n) / slices)
      const count = Math.floor(((k + 1) * phase.n) / slices) - from
      if (count === 0) continue
      await receiver.call({ cmd: 'slice', count })
      const arrived = receiver.call({ cmd: 'waitSlice' }, 600_000)
      const dbBefore = db.cpu()
      const brokerBefore = broker ? processCpuMs(broker.pid) : null
      const sent = await publisher.call({ ...phase.send, from, count, size: o.size }, 600_000)
      const done = await Promise.race([arrived, sleep(o.grace).then(() => null)])
      const got = done ?? (await receiver.call({ cmd: 'report' }), await arrived)
      const dbAfter = db.cpu()
      const brokerAfter = broker ? processCpuMs(broker.pid) : null
      await sleep(100) // let both systems go quiet between slices
      const a = acc[system]
      if (got.received > 0) a.seconds += (got.lastRecv - got.firstStamp) / 1000
      a.received += got.received
      a.pubCpuUs += sent.cpuUs
      a.recvCpuUs += got.cpuUs
      if (dbBefore === null || dbAfter === null) a.dbKnown = false
      else a.dbCpuMs += dbAfter - dbBefore
      if (brokerBefore === null || brokerAfter === null) a.brokerKnown = false
      else a.brokerCpuMs += brokerAfter - brokerBefore
      a.load = Math.max(a.load, loadavg()[0])
      a.failed += sent.failed
      a.sendMs += sent.ms
      a.maxLagMs = Math.max(a.maxLagMs, sent.maxLagMs)
    }
  }
  const rows = []
  for (const system of o.systems) {
    const all = await pairs[system].receiver.call({ cmd: 'collect' })
    const a = acc[system]
    rows.push({
      system,
      phase: phase.name,
      messages: phase.n,
      received: all.received,
      lost: phase.n - all.received,
      outOfOrder: all.outOfOrder,
      duplicates: all.duplicates,
      failedSends: a.failed,
      seconds: a.seconds,
      perSecond: a.received / a.seconds,
      offeredPerSecond: (phase.n * 1000) / a.sendMs,
      maxLagMs: a.maxLagMs,
      p50: all.p50,
      p90: all.p90,
      p99: all.p99,
      p999: all.p999,
      max: all.max,
      pubCpuUsPerMsg: a.pubCpuUs / phase.n,
      recvCpuUsPerMsg: a.recvCpuUs / Math.max(1, a.received),
      dbCpuUsPerMsg: a.dbKnown ? (a.dbCpuMs * 1000) / phase.n : null,
      brokerCpuUsPerMsg: a.brokerKnown ? (a.brokerCpuMs * 1000) / phase.n : null,
      load: a.load,
    })
  }
  return rows
}

function report(rows, o) {
  process.stdout.write(
    `\nBus benchmark: ${fmt(o.messages)} messages of ${o.size} bytes per system for throughput (at most ${fmt(o.window)} unfinished sends), ` +
      `${fmt(o.latencyMessages)} at ${fmt(o.rate)}/s for latency; each in ${o.slices} slice${o.slices === 1 ? '' : 's'} per system, alternating systems. ` +
      `One publisher and one receiver process per system (raw publisher on ${o['raw-pool']} connection${o['raw-pool'] === 1 ? '' : 's'}), one embedded PostgreSQL on 127.0.0.1.\n` +
      `${o.environment}\n\n`,
  )
  process.stdout.write(
    table(
      ['system', 'phase', 'received', 'lost', 'order errs', 'msg/s', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'pub µs/msg', 'recv µs/msg', 'db µs/msg', 'broker µs/msg', 'max load'],
      rows.map((r) => [
        r.system,
        r.phase,
        fmt(r.received),
        fmt(r.lost),
        fmt(r.outOfOrder + r.duplicates),
        fmt(r.perSecond),
        fmt(r.p50, 2),
        fmt(r.p90, 2),
        fmt(r.p99, 2),
        fmt(r.max, 1),
        fmt(r.pubCpuUsPerMsg, 1),
        fmt(r.recvCpuUsPerMsg, 1),
        fmt(r.dbCpuUsPerMsg, 1),
        fmt(r.brokerCpuUsPerMsg, 1),
        fmt(r.load, 2),
      ]),
    ) + '\n',
  )
  process.stdout.write(
    '\nmsg/s: received messages / (last receive − first send), summed over the slices. Latency: receive time − send time carried in the payload.\n' +
      'µs/msg: CPU time (user+system) per message of the publisher process, the receiver process, all PostgreSQL processes, and the broker (redis-server, nats-server).\n' +
      'max load: the highest 1-minute load average seen at the end of a slice.\n' +
      'Latencies in the throughput rows are queueing under saturation; compare latency at the fixed rate.\n',
  )
  for (const r of rows) {
    if (r.phase.startsWith('latency') && r.offeredPerSecond < 0.95 * o.rate) {
      process.stdout.write(`warning: ${r.system} was offered only ${fmt(r.offeredPerSecond)}/s of ${fmt(o.rate)}/s (its publisher fell behind by up to ${fmt(r.maxLagMs, 1)} ms)\n`)
    }
    if (r.lost > 0 || r.failedSends > 0) process.stdout.write(`note: ${r.system} ${r.phase}: ${r.lost} lost, ${r.failedSends} sends failed\n`)
  }
  const pick = (system, phase) => rows.find((r) => r.system === system && r.phase.startsWith(phase))
  const ratios = {}
  for (const mine of ['chorus', 'chorus-redis', 'chorus-nats']) {
    const [ct, rt, cl, rl] = [pick(mine, 'throughput'), pick('raw', 'throughput'), pick(mine, 'latency'), pick('raw', 'latency')]
    if (!(ct && rt && cl && rl)) continue
    const r = (ratios[mine] = { throughput: ct.perSecond / rt.perSecond, p50: cl.p50 / rl.p50, p99: cl.p99 / rl.p99 })
    process.stdout.write(
      `\nthroughput ${mine}/raw = ${fmt(r.throughput, 2)}× (${fmt(ct.perSecond)} vs ${fmt(rt.perSecond)} msg/s${mine === 'chorus' ? `; goal ≥ 3×: ${r.throughput >= 3 ? 'met' : 'NOT met'}` : ''})\n` +
        `latency at ${fmt(o.rate)}/s, ${mine} vs raw: p50 ${fmt(cl.p50, 2)} vs ${fmt(rl.p50, 2)} ms, p99 ${fmt(cl.p99, 2)} vs ${fmt(rl.p99, 2)} ms ` +
        `(${mine}/raw p99 = ${fmt(r.p99, 2)}${mine === 'chorus' ? `; goal ≤ 1: ${r.p99 <= 1 ? 'met' : 'NOT met'}` : ''})\n`,
    )
  }
  if (o.json) process.stdout.write(JSON.stringify({ options: o, rows, ratios }) + '\n')
}

// ---- the payload -----------------------------------------------------------------------------

/** `<seq>|<send time, ms>|xxxx…` padded to `size` bytes. */
function payload(seq, size) {
  const head = `${seq}|${now().toFixed(3)}|`
  return head + PAD.slice(0, Math.max(0, size - head.length))
}
const PAD = 'x'.repeat(64 * 1024)

// ---- the publisher ---------------------------------------------------------------------------

async function publisher(system) {
  let send
  let close
  serveParent({
    async setup() {
      if (system.startsWith('chorus')) {
        const cluster = await chorusCluster(system, 'bench-publisher')
        send = (data) => cluster.bus.publish(CHORUS_CHANNEL, data)
        close = () => cluster.close()
      } else {
        const { default: postgres } = await import('postgres')
        const sql = postgres(process.env.DATABASE_URL, { max: Number(process.env.BENCH_RAW_POOL), onnotice: () => undefined })
        await sql`select 1`
        send = (data) => sql.notify(RAW_CHANNEL, data)
        close = () => sql.end({ timeout: 1 })
      }
      return {}
    },

    /** Sends messages from..from+count-1 as fast as the system accepts them, at most `window` unfinished at once. */
    async blast({ from, count, size, window }) {
      const cpu = process.cpuUsage()
      const started = now()
      const end = from + count
      let next = from
      let unfinished = 0
      let failed = 0
      await new Promise((resolve) => {
        const settle = () => {
          unfinished--
          if (next < end) pump()
          else if (unfinished === 0) resolve()
        }
        const fail = () => {
          failed++
          settle()
        }
        const pump = () => {
          while (unfinished < window && next < end) {
            unfinished++
            send(payload(next++, size)).then(settle, fail)
          }
        }
        pump()
      })
      return { failed, ms: now() - started, maxLagMs: 0, cpuUs: cpuUs(cpu) }
    },

    /** Sends messages from..from+count-1 at `rate` per second (open loop: a late tick sends everything due). */
    async paced({ from, count, size, rate }) {
      const cpu = process.cpuUsage()
      const interval = 1000 / rate
      const started = now()
      const sends = new Array(count)
      let failed = 0
      let maxLagMs = 0
      let i = 0
      while (i < count) {
        const t = now()
        const due = Math.min(count, Math.floor((t - started) / interval) + 1)
        if (i < due) maxLagMs = Math.max(maxLagMs, t - (started + i * interval))
        for (; i < due; i++) sends[i] = send(payload(from + i, size)).catch(() => void failed++)
        if (i < count) await sleep(Math.max(0, started + i * interval - now()))
      }
      const ms = now() - started
      await Promise.all(sends)
      return { failed, ms, maxLagMs, cpuUs: cpuUs(cpu) }
    },

    async stop() {
      await close?.()
      setImmediate(() => process.exit(0))
      return {}
    },
  })
}

/** A cluster member for a Chorus system: `chorus` on the PostgreSQL bus, the others on BENCH_BUS_URL, each in its own schema. */
async function chorusCluster(system, instanceId) {
  const { createCluster } = await import('../../dist/index.js')
  const own = system === 'chorus' ? {} : { bus: { url: process.env.BENCH_BUS_URL }, schema: system.replace('-', '_') }
  return createCluster({ databaseUrl: process.env.DATABASE_URL, instanceId, preset: 'local', logLevel: 'error', ...own })
}

function cpuUs(since) {
  const d = process.cpuUsage(since)
  return d.user + d.system
}

// ---- the receiver ----------------------------------------------------------------------------

async function receiver(system) {
  let close
  // The whole measurement (`arm`) …
  let expected = 0
  let received = 0
  let seen = new Uint8Array(0)
  let latencies = new Float64Array(0)
  let lastSeq = -1
  let outOfOrder = 0
  let duplicates = 0
  // … and the current slice of it (`slice`).
  let sliceExpected = 0
  let sliceReceived = 0
  let firstStamp = Infinity
  let lastRecv = 0
  let cpu = process.cpuUsage()
  let finish = null

  const onMessage = (data) => {
    const t = now()
    const bar = data.indexOf('|')
    const seq = Number(data.slice(0, bar))
    const stamp = Number(data.slice(bar + 1, data.indexOf('|', bar + 1)))
    if (!(seq >= 0 && seq < expected)) return // not part of this measurement
    if (seen[seq]) {
      duplicates++
      return
    }
    seen[seq] = 1
    if (seq < lastSeq) outOfOrder++
    lastSeq = seq
    latencies[received++] = t - stamp
    sliceReceived++
    if (stamp < firstStamp) firstStamp = stamp
    lastRecv = t
    if (sliceReceived === sliceExpected) finish?.()
  }

  serveParent({
    async setup() {
      if (system.startsWith('chorus')) {
        const cluster = await chorusCluster(system, 'bench-receiver')
        cluster.bus.subscribe(CHORUS_CHANNEL, onMessage)
        close = () => cluster.close()
      } else {
        const { default: postgres } = await import('postgres')
        const sql = postgres(process.env.DATABASE_URL, { max: 1, onnotice: () => undefined })
        await sql.listen(RAW_CHANNEL, onMessage)
        close = () => sql.end({ timeout: 1 })
      }
      return {}
    },
    /** Starts a measurement of messages 0..n-1. */
    async arm({ n }) {
      expected = n
      received = 0
      seen = new Uint8Array(n)
      latencies = new Float64Array(n)
      lastSeq = -1
      outOfOrder = 0
      duplicates = 0
      return {}
    },
    /** Starts a slice of `count` messages. */
    async slice({ count }) {
      sliceExpected = count
      sliceReceived = 0
      firstStamp = Infinity
      lastRecv = 0
      cpu = process.cpuUsage()
      return {}
    },
    /** Resolves once the slice has arrived whole, or when `report` is asked. */
    waitSlice() {
      return new Promise((resolve) => {
        finish = () => {
          finish = null
          resolve({ received: sliceReceived, firstStamp, lastRecv, cpuUs: cpuUs(cpu) })
        }
        if (sliceReceived === sliceExpected) finish()
      })
    },
    async report() {
      finish?.()
      return {}
    },
    /** The measurement's totals and latency distribution. */
    async collect() {
      const sorted = latencies.slice(0, received).sort()
      return {
        received,
        outOfOrder,
        duplicates,
        p50: quantile(sorted, 0.5),
        p90: quantile(sorted, 0.9),
        p99: quantile(sorted, 0.99),
        p999: quantile(sorted, 0.999),
        max: sorted.length ? sorted[sorted.length - 1] : NaN,
      }
    },
    async stop() {
      await close?.()
      setImmediate(() => process.exit(0))
      return {}
    },
  })
}
