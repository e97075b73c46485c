// Fan-out benchmark: one publisher, 1,000 WebSocket subscribers spread over three instance
// processes, for five systems side by side in one run and one topology:
//   chorus       — cluster.realtime (STOMP 1.2 over WebSocket), relayed through the realtime log and
//                  the bus on the embedded PostgreSQL;
//   chorus-redis — the same with the bus on a local redis-server (the log stays in PostgreSQL);
//   chorus-nats  — the same with the bus on a local nats-server;
//   redis        — socket.io 4 + @socket.io/redis-adapter on the same redis-server;
//   postgres     — socket.io 4 + @socket.io/postgres-adapter on the same embedded PostgreSQL.
// Each Chorus system is its own cluster, in its own schema of the one database.
// Instance 0 of each system is the publisher (`server.mjs`); the subscribers live in two load
// processes (`clients.mjs`). CPU is accounted per step: the instances, the load processes, PostgreSQL
// (every system: what it costs the database per published message) and the broker (redis-server,
// nats-server) where the system uses one. Two measurements per system:
//   throughput — a ramp of fixed publish rates (`--rates`), `--step-seconds` each, taking turns
//                between systems at each rate. A system sustains a rate when every subscriber gets
//                every message within `--grace` ms of the last publish, no queue grows (the p50 of
//                the step's last third stays within `--growth` × that of its first third) and p99
//                stays under `--sustain-p99` ms. Reported: delivered messages/s at the highest rate
//                it sustains.
//   latency    — publish→deliver p50/p90/p99 at one rate every system sustains (`--rate`, lowered to
//                the lowest sustained rate if needed), in slices alternating between systems.
//
//   node bench/fanout/run.mjs [--subscribers 1000] [--rates 10,20,40,80,160,320,640] [--rate 20] …
//   node bench/fanout/run.mjs --help
import { loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { Child, fmt, machine, now, options, runMain, sleep, startDatabase, table } from '../lib/harness.mjs'
import { processCpuMs } from '../lib/cpu.mjs'
import { startNats } from '../lib/nats.mjs'
import { startRedis } from '../lib/redis.mjs'

const SERVER = fileURLToPath(new URL('./server.mjs', import.meta.url))
const CLIENTS = fileURLToPath(new URL('./clients.mjs', import.meta.url))
const SYSTEMS = ['chorus', 'chorus-redis', 'chorus-nats', 'redis', 'postgres']
const TITLES = {
  chorus: 'Chorus realtime (STOMP), PostgreSQL bus',
  'chorus-redis': 'Chorus realtime (STOMP), Redis bus',
  'chorus-nats': 'Chorus realtime (STOMP), NATS bus',
  redis: 'socket.io + redis-adapter',
  postgres: 'socket.io + postgres-adapter',
}

const opts = options('BENCH_FANOUT', {
  subscribers: 1000, // per system, spread over the instances
  instances: 3, // per system; instance 0 publishes
  loaders: 2, // load processes holding the subscribers (each holds its share for every system)
  size: 100, // message body bytes
  rates: '10,20,40,80,160,320,640', // publish rates (messages/s) of the throughput ramp
  'step-seconds': 3, // length of each ramp step
  refine: true, // one more step between the highest sustained rate and the first one missed
  retries: 1, // a missed step is run again this many times before the system leaves the ramp (noise)
  'keep-ramping': false, // every system runs every rate, missed or not: on a machine too busy for any system to sustain a rate, "peak" then shows what each gets through
  'sustain-p99': 1000, // ms: a step whose p99 is above this is not sustained
  growth: 2, // a step whose last third's p50 is above this × the first third's (+ 20 ms) is not sustained: its queue grows
  grace: 2000, // ms after the last publish of a step for the last deliveries
  rate: 20, // publish rate of the latency measurement (lowered to what every system sustains)
  'latency-seconds': 6, // per system, cut into --slices slices
  slices: 3,
  warmup: 2, // seconds at 20 messages/s per system before measuring
  only: '', // comma-separated subset of chorus,chorus-redis,chorus-nats,redis,postgres
  'redis-client': 'redis', // the redis adapter's client: redis (node-redis) or ioredis
  'stomp-client': 'raw', // Chorus subscribers: raw (a minimal STOMP client over ws) or stompjs (@stomp/stompjs)
  dist: '', // the dist/ directory of another Chorus build to measure (default: this repository's), e.g. to compare a change
  deadline: 600_000, // ms before the whole run is stopped
  json: false, // also print the results as one JSON line
  profile: '', // a directory: write V8 CPU profiles of every instance process there
})
const systems = opts.only ? opts.only.split(',').map((s) => s.trim()) : SYSTEMS
for (const s of systems) if (!SYSTEMS.includes(s)) throw new Error(`--only takes a subset of ${SYSTEMS.join(',')}`)
const rates = String(opts.rates)
  .split(',')
  .map(Number)
  .filter((r) => r > 0)
  .sort((a, b) => a - b)
if (rates.length === 0) throw new Error('--rates must list at least one rate')
if (!['raw', 'stompjs'].includes(opts['stomp-client'])) throw new Error('--stomp-client must be raw or stompjs')
if (!['redis', 'ioredis'].includes(opts['redis-client'])) throw new Error('--redis-client must be redis or ioredis')
if (opts.size < 40) throw new Error('--size must be at least 40 (the body carries a sequence number and a timestamp)')

/** The next sequence number to publish: every step gets its own range, so late deliveries are told apart. */
let nextSeq = 0

// ---- setup ---------------------------------------------------------------------------------

/** The broker a system uses besides PostgreSQL, if any. */
const brokerOf = (system) => (system === 'redis' || system === 'chorus-redis' ? 'redis' : system === 'chorus-nats' ? 'nats' : null)

async function setup(db, brokers) {
  const servers = {}
  const urls = {}
  // One system at a time (15 processes starting at once on a busy machine miss any sane timeout);
  // a system's instances together, listening for every `ready` at once: a message no one waits for yet is not kept.
  for (const system of systems) {
    process.stderr.write(`starting ${opts.instances} ${system} instances …\n`)
    servers[system] = Array.from({ length: opts.instances }, (_, i) => {
      const prof = opts.profile ? ['--cpu-prof', '--cpu-prof-dir', opts.profile, '--cpu-prof-name', `${system}-${i}.cpuprofile`] : []
      const env = { DATABASE_URL: db.url, BENCH_INDEX: String(i), REDIS_PORT: String(brokers.redis?.port ?? ''), BENCH_REDIS_CLIENT: opts['redis-client'], BENCH_CHORUS_DIST: opts.dist, BENCH_BUS_URL: brokers[brokerOf(system)]?.url ?? '' }
      return new Child(SERVER, [system], env, prof)
    })
    const ready = await Promise.all(servers[system].map((c) => c.waitFor((m) => m.type === 'ready', 180_000, `${system} instance ready`)))
    const chorus = system.startsWith('chorus')
    urls[system] = ready.map((m) => (chorus ? `ws://127.0.0.1:${m.port}/stomp` : `http://127.0.0.1:${m.port}`))
  }
  const loaders = Array.from({ length: opts.loaders }, () => new Child(CLIENTS, [], {}, ['--max-old-space-size=2048']))
  await Promise.all(loaders.map((l) => l.waitFor((m) => m.type === 'ready', 120_000, 'load process ready')))
  for (const system of systems) {
    const t0 = now()
    await Promise.all(
      loaders.map((l, j) => {
        const count = Math.floor(((j + 1) * opts.subscribers) / opts.loaders) - Math.floor((j * opts.subscribers) / opts.loaders)
        return l.call({ cmd: 'connect', system, urls: urls[system], count, offset: j, stompClient: opts['stomp-client'] }, 120_000)
      }),
    )
    process.stderr.write(`${system}: ${opts.subscribers} subscribers connected in ${fmt((now() - t0) / 1000, 1)} s\n`)
  }
  return { servers, loaders }
}

// ---- measurement ------------------------------------------------------------------------------

/** Publishes `rate`/s for `seconds` from instance 0 of `system` and measures what every subscriber got. */
async function step(cluster, db, system, rate, seconds) {
  const { servers, loaders, brokers } = cluster
  const broker = brokers[brokerOf(system)] ?? null
  const brokerCpuMs = () => (broker ? processCpuMs(broker.pid) : null)
  const count = Math.max(1, Math.round(rate * seconds))
  const from = nextSeq
  const to = (nextSeq += count)
  const expected = count * opts.subscribers
  const before = await Promise.all(loaders.map((l) => l.call({ cmd: 'step', system, from, to })))
  const serverBefore = await Promise.all(servers[system].map((s) => s.call({ cmd: 'cpu' })))
  const dbBefore = db.cpu()
  const brokerBefore = brokerCpuMs()
  const sent = await servers[system][0].call({ cmd: 'publish', from, count, rate, size: opts.size }, 600_000)
  // Wait for the last deliveries: all of them, or until the grace period is over.
  const deadline = now() + opts.grace
  let got
  for (;;) {
    got = await Promise.all(loaders.map((l) => l.call({ cmd: 'collect', system })))
    const received = got.reduce((n, g) => n + g.received, 0)
    if (received >= expected || now() >= deadline) break
    await sleep(50)
  }
  const serverAfter = await Promise.all(servers[system].map((s) => s.call({ cmd: 'cpu' })))
  const dbAfter = db.cpu()
  const brokerAfter = brokerCpuMs()
  const received = got.reduce((n, g) => n + g.received, 0)
  const hist = mergeHist(got.map((g) => g.hist))
  const firstP50 = quantileOf(mergeHist(got.map((g) => g.first)), 0.5)
  const lastP50 = quantileOf(mergeHist(got.map((g) => g.last)), 0.5)
  const lastRecv = Math.max(...got.map((g) => g.lastRecv))
  const cpu = {
    server: serverAfter.reduce((n, s, i) => n + s.cpuUs - serverBefore[i].cpuUs, 0),
    clients: got.reduce((n, g, i) => n + g.cpuUs - before[i].cpuUs, 0),
    db: dbBefore === null || dbAfter === null ? null : (dbAfter - dbBefore) * 1000,
    broker: brokerBefore === null || brokerAfter === null ? null : (brokerAfter - brokerBefore) * 1000,
  }
  const r = {
    system,
    rate,
    count,
    expected,
    received,
    lost: expected - received,
    duplicates: got.reduce((n, g) => n + g.duplicates, 0),
    reordered: got.reduce((n, g) => n + g.reordered, 0),
    offered: (count * 1000) / sent.ms,
    failed: sent.failed,
    maxLagMs: sent.maxLagMs,
    deliveredPerSecond: received > 0 ? (received * 1000) / (lastRecv - sent.started) : 0,
    hist,
    firstP50,
    lastP50,
    p50: quantileOf(hist, 0.5),
    p90: quantileOf(hist, 0.9),
    p99: quantileOf(hist, 0.99),
    max: quantileOf(hist, 1),
    serverUsPerDelivery: cpu.server / Math.max(1, received),
    clientUsPerDelivery: cpu.clients / Math.max(1, received),
    // Negative when database backends exited during the step (their CPU time leaves the sum): unknown.
    dbUsPerMessage: cpu.db === null || cpu.db < 0 ? null : cpu.db / count,
    brokerUsPerMessage: cpu.broker === null || cpu.broker < 0 ? null : cpu.broker / count,
    load: loadavg()[0],
    uncaught: serverAfter.reduce((n, s) => n + (s.uncaught ?? 0), 0),
  }
  r.growing = !(lastP50 <= opts.growth * firstP50 + 20)
  r.sustained = r.lost === 0 && r.failed === 0 && !r.growing && r.p99 <= opts['sustain-p99'] && r.offered >= 0.95 * rate
  if (r.lost > 0) await quiet(cluster, system)
  return r
}

/** After an overloaded step: waits (up to 20 s) until the system's backlog stops arriving, so it does not weigh on the next step. */
async function quiet(cluster, system) {
  let last = -1
  const until = now() + 20_000
  while (now() < until) {
    await sleep(300)
    const got = await Promise.all(cluster.loaders.map((l) => l.call({ cmd: 'collect', system })))
    const n = got.reduce((s, g) => s + g.received + g.stray, 0)
    if (n === last) return
    last = n
  }
}

async function measure(cluster, db) {
  if (opts.warmup > 0) {
    process.stderr.write('warm-up …\n')
    for (const system of systems) await step(cluster, db, system, 20, opts.warmup)
  }
  // Throughput: the ramp, taking turns at each rate; a system leaves the ramp at its first missed rate.
  const ramp = []
  const best = {}
  const missed = {}
  let active = [...systems]
  const runStep = async (system, rate) => {
    for (let attempt = 0; ; attempt++) {
      const r = await step(cluster, db, system, rate, opts['step-seconds'])
      r.attempt = attempt
      ramp.push(r)
      process.stderr.write(
        `${system} @ ${fmt(rate)}/s: ${fmt(r.deliveredPerSecond)} delivered/s, missing ${fmt(r.lost)}, p50 ${fmt(r.p50, 1)} ms (first third ${fmt(r.firstP50, 1)}, last ${fmt(r.lastP50, 1)}), p99 ${fmt(r.p99, 1)} ms — ${r.sustained ? 'sustained' : 'missed'} (load ${fmt(r.load, 2)})\n`,
      )
      if (r.sustained) {
        if (!best[system] || r.rate > best[system].rate) best[system] = r
        return true
      }
      if (attempt >= opts.retries) break
    }
    if (!missed[system] || rate < missed[system]) missed[system] = rate
    return false
  }
  for (const [k, rate] of rates.entries()) {
    const order = k % 2 === 0 ? active : [...active].reverse()
    const still = []
    for (const system of order) if (await runStep(system, rate)) still.push(system)
    if (!opts['keep-ramping']) active = active.filter((s) => still.includes(s))
    if (active.length === 0) break
  }
  if (opts.refine) {
    for (const system of systems) {
      const lo = best[system]?.rate
      const hi = missed[system]
      if (!lo || !hi) continue
      const mid = Math.round(Math.sqrt(lo * hi))
      if (mid > lo && mid < hi) await runStep(system, mid)
    }
  }
  // Latency at one rate every system sustains.
  // A system that sustained no rate of the ramp is measured at the lowest one.
  const common = Math.min(opts.rate, ...systems.map((s) => best[s]?.rate ?? rates[0]))
  process.stderr.write(`latency at ${fmt(common)}/s: ${opts.slices} slice${opts.slices === 1 ? '' : 's'} per system …\n`)
  const latency = {}
  for (let k = 0; k < opts.slices; k++) {
    const order = k % 2 === 0 ? systems : [...systems].reverse()
    for (const system of order) {
      const r = await step(cluster, db, system, common, opts['latency-seconds'] / opts.slices)
      const acc = (latency[system] ??= { system, rate: common, expected: 0, received: 0, lost: 0, duplicates: 0, reordered: 0, failed: 0, hist: new Uint32Array(r.hist.length), slices: [] })
      acc.expected += r.expected
      acc.received += r.received
      acc.lost += r.lost
      acc.duplicates += r.duplicates
      acc.reordered += r.reordered
      acc.failed += r.failed
      acc.hist = mergeHist([acc.hist, r.hist])
      acc.slices.push(r)
    }
  }
  for (const acc of Object.values(latency)) {
    acc.p50 = quantileOf(acc.hist, 0.5)
    acc.p90 = quantileOf(acc.hist, 0.9)
    acc.p99 = quantileOf(acc.hist, 0.99)
    acc.max = quantileOf(acc.hist, 1)
    acc.serverUsPerDelivery = mean(acc.slices.map((s) => s.serverUsPerDelivery))
    acc.clientUsPerDelivery = mean(acc.slices.map((s) => s.clientUsPerDelivery))
    for (const k of ['dbUsPerMessage', 'brokerUsPerMessage']) {
      const xs = acc.slices.map((s) => s[k])
      acc[k] = xs.includes(null) ? null : mean(xs)
    }
    acc.load = mean(acc.slices.map((s) => s.load))
  }
  return { ramp, best, missed, latency, common }
}

function mean(xs) {
  return xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length)
}

// ---- histograms (2 % buckets over µs, as in clients.mjs) -------------------------------------

function mergeHist(hists) {
  const out = new Uint32Array(hists[0].length)
  for (const h of hists) for (let i = 0; i < h.length; i++) out[i] += h[i]
  return out
}

/** The q-quantile (nearest rank) in ms: the upper edge of the bucket it falls in. */
function quantileOf(hist, q) {
  let total = 0
  for (const n of hist) total += n
  if (total === 0) return NaN
  const rank = Math.max(1, Math.ceil(q * total))
  let seen = 0
  for (let i = 0; i < hist.length; i++) {
    seen += hist[i]
    if (seen >= rank) return i === 0 ? 0.001 : Math.pow(1.02, i) / 1000
  }
  return NaN
}

// ---- report ----------------------------------------------------------------------------------

function report({ ramp, best, latency, common }, environment) {
  const out = (s) => process.stdout.write(s)
  out(
    `\nFan-out benchmark: ${fmt(opts.subscribers)} subscribers per system over ${opts.instances} instance processes (instance 0 publishes), ` +
      `held by ${opts.loaders} load processes; ${opts.size}-byte bodies. Chorus subscribers: ${opts['stomp-client'] === 'raw' ? 'a minimal STOMP 1.2 client over ws' : '@stomp/stompjs'}; ` +
      `socket.io subscribers: socket.io-client over WebSocket, joined to one room.\n${environment}\n\n`,
  )
  out(
    `Throughput ramp, ${opts['step-seconds']} s per step (a system leaves at its first rate missed ${opts.retries + 1} time${opts.retries ? 's' : ''}; ` +
      `sustained = every delivery within ${fmt(opts.grace)} ms of the last publish, p99 ≤ ${fmt(opts['sustain-p99'])} ms, ` +
      `and no growing queue: p50 of the step's last third ≤ ${opts.growth} × p50 of its first third + 20 ms):\n`,
  )
  out(
    table(
      ['system', 'rate/s', 'deliveries', 'missing', 'dup', 'reordered', 'delivered/s', 'p50 ms', 'p50 first→last ⅓', 'p99 ms', 'max ms', 'sustained', 'srv µs/dlv', 'cli µs/dlv', 'pg µs/msg', 'broker µs/msg', 'load'],
      [...ramp]
        .sort((a, b) => SYSTEMS.indexOf(a.system) - SYSTEMS.indexOf(b.system) || a.rate - b.rate || a.attempt - b.attempt)
        .map((r) => [
          r.system,
          fmt(r.rate),
          fmt(r.received),
          fmt(r.lost),
          fmt(r.duplicates),
          fmt(r.reordered),
          fmt(r.deliveredPerSecond),
          fmt(r.p50, 1),
          `${fmt(r.firstP50, 0)}→${fmt(r.lastP50, 0)}`,
          fmt(r.p99, 1),
          fmt(r.max, 1),
          r.sustained ? 'yes' : 'no',
          fmt(r.serverUsPerDelivery, 1),
          fmt(r.clientUsPerDelivery, 1),
          fmt(r.dbUsPerMessage, 0),
          fmt(r.brokerUsPerMessage, 0),
          fmt(r.load, 2),
        ]),
    ) + '\n',
  )
  out(
    'missing: deliveries that had not arrived by the end of the grace period (late or lost); reordered: arrived after a later message. ' +
      'delivered/s: deliveries / (last delivery − first publish). srv/cli µs/dlv: CPU time of the 3 instances / the load processes per delivery; ' +
      'pg µs/msg: CPU time of PostgreSQL (all its processes) per published message; broker µs/msg: of redis-server (chorus-redis, redis) or nats-server (chorus-nats). ' +
      'load: the 1-minute load average at the end of the step.\n\n',
  )
  const rows = systems.map((system) => {
    const b = best[system]
    const l = latency[system]
    const peak = Math.max(0, ...ramp.filter((r) => r.system === system).map((r) => r.deliveredPerSecond))
    return { system, maxRate: b?.rate ?? 0, delivered: b?.deliveredPerSecond ?? 0, peak, ...pickLatency(l) }
  })
  out(`Summary (throughput at the highest sustained rate; latency at ${fmt(common)} messages/s = ${fmt(common * opts.subscribers)} deliveries/s, every system):\n`)
  out(
    table(
      ['system', 'max rate/s', 'delivered/s', 'peak dlv/s', 'lat. deliveries', 'missing', 'reordered', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'srv µs/dlv', 'cli µs/dlv', 'pg µs/msg', 'broker µs/msg'],
      rows.map((r) => [
        TITLES[r.system],
        fmt(r.maxRate),
        fmt(r.delivered),
        fmt(r.peak),
        fmt(r.received),
        fmt(r.lost),
        fmt(r.reordered),
        fmt(r.p50, 2),
        fmt(r.p90, 2),
        fmt(r.p99, 2),
        fmt(r.max, 1),
        fmt(r.serverUsPerDelivery, 1),
        fmt(r.clientUsPerDelivery, 1),
        fmt(r.dbUsPerMessage, 0),
        fmt(r.brokerUsPerMessage, 0),
      ]),
    ) + '\n',
  )
  out('pg/broker µs/msg here: at the latency rate, the CPU time of PostgreSQL / the broker per published message.\n')
  out('peak dlv/s: the most delivered/s of any step, sustained or not (what the system gets through when overloaded).\n')
  const by = Object.fromEntries(rows.map((r) => [r.system, r]))
  const ratios = {}
  for (const [mine, peer, goal] of [
    ['chorus', 'redis', 1.5],
    ['chorus', 'postgres', 3],
    ['chorus-redis', 'redis', 1.5],
    ['chorus-nats', 'redis', 1.5],
  ]) {
    const c = by[mine]
    const p = by[peer]
    if (!c || !p) continue
    const x = p.delivered ? c.delivered / p.delivered : null
    const peak = p.peak ? c.peak / p.peak : null
    const p99 = c.p99 / p.p99
    ratios[`${mine}/${peer}`] = { throughput: x, peak, p99 }
    const sustained =
      x === null
        ? `delivered/s at the highest sustained rate: ${TITLES[peer]} sustained none (goal ≥ ${goal}×: not measurable)`
        : `delivered/s ${fmt(x, 2)}× (${fmt(c.delivered)} vs ${fmt(p.delivered)}; goal ≥ ${goal}×: ${x >= goal ? 'met' : 'NOT met'})`
    out(
      `\n${TITLES[mine]} / ${TITLES[peer]}: ${sustained}; peak ${fmt(peak, 2)}×; ` +
        `p99 at ${fmt(common)}/s ${fmt(c.p99, 2)} vs ${fmt(p.p99, 2)} ms (${Number.isNaN(p99) ? 'not comparable: a system delivered nothing' : p99 <= 1 ? 'equal or better' : 'worse'})`,
    )
  }
  out('\n')
  if (rows.some((r) => r.maxRate > 0 && r.maxRate === rates.at(-1))) out('note: a system sustained the highest rate of the ramp; its throughput is a lower bound (add higher --rates).\n')
  for (const r of rows) if (!r.maxRate) out(`note: ${r.system} sustained none of the ramp's rates.\n`)
  for (const system of systems) {
    const n = Math.max(0, ...ramp.filter((r) => r.system === system).map((r) => r.uncaught))
    if (n > 0) out(`note: ${system} instances reported ${n} uncaught error${n === 1 ? '' : 's'} (see stderr); they kept running.\n`)
  }
  if (opts.json) out(JSON.stringify({ options: opts, ramp: ramp.map(({ hist, ...r }) => r), summary: rows, ratios, commonRate: common }) + '\n')
}

function pickLatency(l) {
  if (!l) return {}
  const { p50, p90, p99, max, received, lost, reordered, serverUsPerDelivery, clientUsPerDelivery, dbUsPerMessage, brokerUsPerMessage } = l
  return { p50, p90, p99, max, received, lost, reordered, serverUsPerDelivery, clientUsPerDelivery, dbUsPerMessage, brokerUsPerMessage }
}

// ---- main ------------------------------------------------------------------------------------

await runMain(
  async () => {
    const startLoad = loadavg()[0].toFixed(2)
    const db = await startDatabase()
    process.stderr.write(`${await db.describe()}\n`)
    const brokers = {
      redis: systems.some((s) => brokerOf(s) === 'redis') ? await startRedis() : null,
      nats: systems.some((s) => brokerOf(s) === 'nats') ? await startNats() : null,
    }
    const cluster = { ...(await setup(db, brokers)), brokers }
    const results = await measure(cluster, db)
    const where = [brokers.redis && `redis-server on 127.0.0.1:${brokers.redis.port} without persistence`, brokers.nats && `nats-server on 127.0.0.1:${brokers.nats.port}`].filter(Boolean)
    report(results, `${await db.describe()}${where.length ? `; ${where.join('; ')}` : ''}\n${machine()} at the end (1-minute load ${startLoad} at the start)`)
    await Promise.all([...cluster.loaders, ...Object.values(cluster.servers).flat()].map((c) => c.stop()))
  },
  { deadlineMs: opts.deadline },
)
