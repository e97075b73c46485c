// Bus benchmark: the Chorus bus against a plain "one NOTIFY per message" loop (the `postgres`
// package's sql.notify / sql.listen), on the same embedded PostgreSQL in the same run, each with a
// publisher process and a receiver process. Two measurements per system:
//   throughput — N messages offered as fast as the system takes them (a bounded window of
//                unfinished sends), messages/s from the first send to the last receive;
//   latency    — the same N messages at a fixed offered rate both sustain; publish→receive
//                p50/p99 from a timestamp carried in each payload.
//
//   node bench/bus/run.mjs [--messages 50000] [--size 100] [--rate 2000] [--window 1000] …
//   node bench/bus/run.mjs --help
//
// The same file is the publisher and the receiver: `run.mjs publisher|receiver chorus|raw`.
import { fileURLToPath } from 'node:url'
import { Child, fmt, now, options, quantile, runMain, serveParent, sleep, startDatabase, table } from '../lib/harness.mjs'

const SCRIPT = fileURLToPath(import.meta.url)
const CHORUS_CHANNEL = 'bench'
const RAW_CHANNEL = 'bench_raw'
const SYSTEMS = ['raw', 'chorus']

const role = process.argv[2]
if (role === 'publisher') await publisher(process.argv[3])
else if (role === 'receiver') await receiver(process.argv[3])
else await coordinator()

// ---- the coordinator -------------------------------------------------------------------------

async function coordinator() {
  const opts = options('BENCH_BUS', {
    messages: 50_000, // per measurement, same for both systems
    'latency-messages': 0, // 0: same as --messages
    size: 100, // payload bytes
    rate: 2_000, // offered messages/s in the latency measurement
    window: 1_000, // most unfinished sends at once in the throughput measurement
    'raw-pool': 10, // connections of the raw publisher (Chorus's work pool is 10 by default)
    warmup: 2_000, // messages sent and discarded before measuring each system
    rounds: 1, // repeat both systems, alternating which goes first
    only: '', // 'chorus' or 'raw' to run one system
    grace: 10_000, // ms to wait for stragglers once the publisher is done
    deadline: 170_000, // ms before the whole run is stopped
    json: false, // also print the results as one JSON line
    profile: '', // a directory: write V8 CPU profiles of the publisher and receiver there
  })
  if (opts.size < 40) throw new Error('--size must be at least 40 (the payload carries a sequence number and a timestamp)')
  const latencyMessages = opts['latency-messages'] || opts.messages
  const systems = opts.only ? [opts.only] : SYSTEMS
  for (const s of systems) if (!SYSTEMS.includes(s)) throw new Error(`--only must be one of ${SYSTEMS.join(', ')}`)

  await runMain(
    async () => {
      const db = await startDatabase()
      const results = []
      for (let round = 0; round < opts.rounds; round++) {
        const order = round % 2 === 0 ? systems : [...systems].reverse()
        for (const system of order) {
          process.stderr.write(`round ${round + 1}: ${system} …\n`)
          results.push(...(await measureSystem(system, db, { ...opts, latencyMessages, round: round + 1 })))
        }
      }
      report(results, { ...opts, latencyMessages })
    },
    { deadlineMs: opts.deadline },
  )
}

async function measureSystem(system, db, o) {
  const env = { DATABASE_URL: db.url, BENCH_RAW_POOL: String(o['raw-pool']) }
  const profile = (role) => (o.profile ? ['--cpu-prof', '--cpu-prof-dir', o.profile, '--cpu-prof-name', `${system}-${role}-round${o.round}.cpuprofile`] : [])
  const receiver = new Child(SCRIPT, ['receiver', system], env, profile('receiver'))
  const publisher = new Child(SCRIPT, ['publisher', system], env, profile('publisher'))
  try {
    await Promise.all([receiver.call({ cmd: 'setup' }, 60_000), publisher.call({ cmd: 'setup' }, 60_000)])
    const run = async (phase, n, send) => {
      await receiver.call({ cmd: 'arm', n })
      const collected = receiver.call({ cmd: 'collect' }, 600_000)
      const dbCpuBefore = db.cpu()
      const sent = await publisher.call({ cmd: send.cmd, n, size: o.size, ...send }, 600_000)
      const done = await Promise.race([collected, sleep(o.grace).then(() => null)])
      const got = done ?? (await receiver.call({ cmd: 'report' }), await collected)
      const dbCpu = dbCpuBefore === null ? null : db.cpu() - dbCpuBefore
      return { system, phase, round: o.round, n, sent, got, dbCpu }
    }
    if (o.warmup > 0) await run('warmup', o.warmup, { cmd: 'blast', window: o.window })
    await sleep(300)
    const throughput = await run('throughput', o.messages, { cmd: 'blast', window: o.window })
    await sleep(300)
    const latency = await run(`latency @ ${fmt(o.rate)}/s`, o.latencyMessages, { cmd: 'paced', rate: o.rate })
    return [throughput, latency]
  } finally {
    await Promise.all([publisher.stop(), receiver.stop()])
  }
}

function summarise(r) {
  const { got, sent, n } = r
  const seconds = (got.lastRecv - got.firstStamp) / 1000
  return {
    system: r.system,
    phase: r.phase,
    round: r.round,
    messages: n,
    received: got.received,
    lost: n - got.received,
    outOfOrder: got.outOfOrder,
    duplicates: got.duplicates,
    failedSends: sent.failed,
    seconds,
    perSecond: got.received / seconds,
    offeredPerSecond: sent.offeredPerSecond,
    maxLagMs: sent.maxLagMs,
    p50: got.p50,
    p90: got.p90,
    p99: got.p99,
    p999: got.p999,
    max: got.max,
    pubCpuUsPerMsg: (sent.cpuUs / n),
    recvCpuUsPerMsg: (got.cpuUs / Math.max(1, got.received)),
    dbCpuUsPerMsg: r.dbCpu === null ? null : (r.dbCpu * 1000) / n,
  }
}

function report(results, o) {
  const rows = results.map(summarise)
  process.stdout.write(
    `\nBus benchmark: ${fmt(o.messages)} messages of ${o.size} bytes per throughput run (window ${fmt(o.window)} unfinished sends, raw pool ${o['raw-pool']} connections); ` +
      `${fmt(o.latencyMessages)} messages at ${fmt(o.rate)}/s per latency run. One publisher process, one receiver process, one embedded PostgreSQL on 127.0.0.1.\n\n`,
  )
  process.stdout.write(
    table(
      ['round', 'system', 'phase', 'received', 'lost', 'order errs', 'msg/s', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'pub µs/msg', 'recv µs/msg', 'db µs/msg'],
      rows.map((r) => [
        r.round,
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
      ]),
    ) + '\n',
  )
  process.stdout.write(
    '\nmsg/s: received messages / (last receive − first send). Latency: receive time − send time carried in the payload.\n' +
      'µs/msg: CPU time (user+system) per message of the publisher process, the receiver process, and all PostgreSQL processes.\n' +
      'Latencies in the throughput rows are queueing under saturation; compare latency at the fixed rate.\n',
  )
  for (const row of rows) {
    if (row.phase.startsWith('latency') && row.offeredPerSecond < 0.95 * o.rate) {
      process.stdout.write(`warning: ${row.system} (round ${row.round}) offered only ${fmt(row.offeredPerSecond)}/s of ${fmt(o.rate)}/s (publisher fell behind by up to ${fmt(row.maxLagMs, 1)} ms)\n`)
    }
    if (row.lost > 0 || row.failedSends > 0) process.stdout.write(`note: ${row.system} ${row.phase} (round ${row.round}): ${row.lost} lost, ${row.failedSends} sends failed\n`)
  }
  const rounds = [...new Set(rows.map((r) => r.round))]
  const ratios = []
  for (const round of rounds) {
    const pick = (system, phase) => rows.find((r) => r.round === round && r.system === system && r.phase.startsWith(phase))
    const [ct, rt, cl, rl] = [pick('chorus', 'throughput'), pick('raw', 'throughput'), pick('chorus', 'latency'), pick('raw', 'latency')]
    if (!ct || !rt || !cl || !rl) continue
    const ratio = ct.perSecond / rt.perSecond
    ratios.push({ round, throughputRatio: ratio, chorusP99: cl.p99, rawP99: rl.p99, chorusP50: cl.p50, rawP50: rl.p50 })
    const p99ok = cl.p99 <= rl.p99
    process.stdout.write(
      `\n${rounds.length > 1 ? `round ${round}: ` : ''}throughput Chorus/raw = ${fmt(ratio, 2)}× (${fmt(ct.perSecond)} vs ${fmt(rt.perSecond)} msg/s; goal ≥ 3×: ${ratio >= 3 ? 'met' : 'NOT met'})\n` +
        `${rounds.length > 1 ? `round ${round}: ` : ''}latency at ${fmt(o.rate)}/s: p50 ${fmt(cl.p50, 2)} vs ${fmt(rl.p50, 2)} ms, p99 ${fmt(cl.p99, 2)} vs ${fmt(rl.p99, 2)} ms ` +
        `(Chorus/raw p99 = ${fmt(cl.p99 / rl.p99, 2)}; goal ≤ 1: ${p99ok ? 'met' : 'NOT met'})\n`,
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
      if (system === 'chorus') {
        const { createCluster } = await import('../../dist/index.js')
        const cluster = await createCluster({ databaseUrl: process.env.DATABASE_URL, instanceId: 'bench-publisher', preset: 'local', logLevel: 'error' })
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

    /** Sends n messages as fast as the system accepts them, at most `window` unfinished at once. */
    async blast({ n, size, window }) {
      const cpu = process.cpuUsage()
      const started = now()
      let next = 0
      let unfinished = 0
      let failed = 0
      await new Promise((resolve) => {
        const settle = () => {
          unfinished--
          if (next < n) pump()
          else if (unfinished === 0) resolve()
        }
        const fail = () => {
          failed++
          settle()
        }
        const pump = () => {
          while (unfinished < window && next < n) {
            unfinished++
            send(payload(next++, size)).then(settle, fail)
          }
        }
        pump()
      })
      const ms = now() - started
      return { failed, offeredPerSecond: (n * 1000) / ms, maxLagMs: 0, cpuUs: cpuUs(cpu) }
    },

    /** Sends n messages at `rate` per second (open loop: a late tick sends everything due). */
    async paced({ n, size, rate }) {
      const cpu = process.cpuUsage()
      const interval = 1000 / rate
      const started = now()
      const sends = new Array(n)
      let failed = 0
      let maxLagMs = 0
      let i = 0
      while (i < n) {
        const t = now()
        const due = Math.min(n, Math.floor((t - started) / interval) + 1)
        if (i < due) maxLagMs = Math.max(maxLagMs, t - (started + i * interval))
        while (i < due) sends[i] = send(payload(i++, size)).catch(() => void failed++)
        if (i < n) await sleep(Math.max(0, started + i * interval - now()))
      }
      const offeredPerSecond = (n * 1000) / (now() - started)
      await Promise.all(sends)
      return { failed, offeredPerSecond, maxLagMs, cpuUs: cpuUs(cpu) }
    },

    async stop() {
      await close?.()
      setImmediate(() => process.exit(0))
      return {}
    },
  })
}

function cpuUs(since) {
  const d = process.cpuUsage(since)
  return d.user + d.system
}

// ---- the receiver ----------------------------------------------------------------------------

async function receiver(system) {
  let close
  let expected = 0
  let received = 0
  let seen = new Uint8Array(0)
  let latencies = new Float64Array(0)
  let lastSeq = -1
  let outOfOrder = 0
  let duplicates = 0
  let firstStamp = Infinity
  let lastRecv = 0
  let cpu = process.cpuUsage()
  let finish = null

  const onMessage = (data) => {
    const t = now()
    const bar = data.indexOf('|')
    const seq = Number(data.slice(0, bar))
    const stamp = Number(data.slice(bar + 1, data.indexOf('|', bar + 1)))
    if (!(seq >= 0 && seq < expected)) return // a straggler from an earlier measurement
    if (seen[seq]) {
      duplicates++
      return
    }
    seen[seq] = 1
    if (seq < lastSeq) outOfOrder++
    lastSeq = seq
    latencies[received++] = t - stamp
    if (stamp < firstStamp) firstStamp = stamp
    lastRecv = t
    if (received === expected) finish?.()
  }

  const stats = () => {
    const cpuUsed = cpuUs(cpu)
    const sorted = latencies.slice(0, received).sort()
    return {
      received,
      outOfOrder,
      duplicates,
      firstStamp,
      lastRecv,
      cpuUs: cpuUsed,
      p50: quantile(sorted, 0.5),
      p90: quantile(sorted, 0.9),
      p99: quantile(sorted, 0.99),
      p999: quantile(sorted, 0.999),
      max: sorted.length ? sorted[sorted.length - 1] : NaN,
    }
  }

  serveParent({
    async setup() {
      if (system === 'chorus') {
        const { createCluster } = await import('../../dist/index.js')
        const cluster = await createCluster({ databaseUrl: process.env.DATABASE_URL, instanceId: 'bench-receiver', preset: 'local', logLevel: 'error' })
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
    async arm({ n }) {
      expected = n
      received = 0
      seen = new Uint8Array(n)
      latencies = new Float64Array(n)
      lastSeq = -1
      outOfOrder = 0
      duplicates = 0
      firstStamp = Infinity
      lastRecv = 0
      cpu = process.cpuUsage()
      return {}
    },
    /** Resolves once every expected message arrived, or when `report` is asked. */
    collect() {
      return new Promise((resolve) => {
        finish = () => {
          finish = null
          resolve(stats())
        }
        if (received === expected) finish()
      })
    },
    async report() {
      finish?.()
      return {}
    },
    async stop() {
      await close?.()
      setImmediate(() => process.exit(0))
      return {}
    },
  })
}
