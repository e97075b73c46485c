// Soak: a 3-instance cluster on an embedded PostgreSQL holding --connections STOMP connections
// (@stomp/stompjs, heart-beats on) with traffic — a broadcast to every connection each second from
// one instance, SENDs from clients fanning out to rooms on every instance, and connections replaced
// at a pace — for --minutes minutes. Each minute it prints, per instance, its sessions, RSS, heap
// after a full GC and its event-loop lag p99 (read from the instance's own /metrics, the figure
// Prometheus would scrape), and for the clients what was delivered, sent and failed.
//
// Verdict: memory is flat after warm-up when no instance's heap after GC grew, from the end of the
// first minute to the end, by more than --max-heap-growth-mb or --max-heap-growth-pct (the larger;
// the slope over the minutes is printed beside it);
// the run also fails on any client error or a connection that did not open, and checks that every
// instance is back to zero sessions once the clients have left.
//
//   npm run soak -- --connections 2000 --minutes 5
//   npm run soak -- --help
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Child, fmt, machine, options, runMain, sleep, startDatabase, table } from '../../bench/lib/harness.mjs'

const INSTANCE = fileURLToPath(new URL('./instance.mjs', import.meta.url))
const CLIENTS = fileURLToPath(new URL('./clients.mjs', import.meta.url))

const opts = options('CHORUS_SOAK', {
  connections: 2000,
  minutes: 5,
  instances: 3,
  loaders: 2, // client processes, each holding its share of the connections
  rooms: 20, // room topics; each connection subscribes to one and to /topic/soak/all
  rate: 20, // client SENDs per second to the rooms
  'broadcast-ms': 1000, // one publish to /topic/soak/all (every connection) this often
  churn: 2, // connections closed and replaced per second
  parallel: 50, // connections opened at once, per loader
  'max-heap-growth-mb': 4,
  'max-heap-growth-pct': 10,
})
if (opts.instances < 1 || opts.connections < 1 || opts.minutes < 1) throw new Error('--instances, --connections and --minutes must be at least 1')

/** The soft limit on open files of this process (children inherit it), or null where /proc is missing. */
function openFileLimit() {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'))
    const soft = line?.split(/\s{2,}/)[1]
    return soft === 'unlimited' ? Infinity : Number(soft)
  } catch {
    return null
  }
}

const mb = (b) => fmt(b / 2 ** 20, 1)

async function main() {
  // Each loader holds its share of the sockets, each instance about connections/instances of them,
  // plus database connections and files: the soft limit must leave room.
  const needed = Math.ceil(opts.connections / opts.loaders) + 512
  const limit = openFileLimit()
  if (limit !== null && limit < needed) {
    throw new Error(`the open-file limit is ${limit}, below the ${needed} a load process needs for ${opts.connections} connections: raise it (ulimit -n ${needed * 2}) or lower --connections`)
  }
  process.stdout.write(`soak: ${opts.connections} STOMP connections over ${opts.instances} instances for ${opts.minutes} min; ${machine()}\n`)
  const db = await startDatabase()
  const instances = Array.from(
    { length: opts.instances },
    (_, i) => new Child(INSTANCE, [], { DATABASE_URL: db.url, SOAK_INDEX: String(i), SOAK_CONNECTIONS: String(opts.connections), CHORUS_LOG_LEVEL: 'warn' }, ['--expose-gc']),
  )
  const ports = (await Promise.all(instances.map((c) => c.waitFor((m) => m.type === 'ready', 60_000, 'instance ready')))).map((m) => m.port)
  const urls = ports.map((p) => `ws://127.0.0.1:${p}/stomp`)
  const loaders = Array.from({ length: opts.loaders }, () => new Child(CLIENTS, [], {}, ['--max-old-space-size=2048']))
  await Promise.all(loaders.map((l) => l.waitFor((m) => m.type === 'ready', 30_000, 'load process ready')))

  const t0 = Date.now()
  const opened = await Promise.all(
    loaders.map((l, j) => {
      const count = Math.floor(((j + 1) * opts.connections) / opts.loaders) - Math.floor((j * opts.connections) / opts.loaders)
      return l.call({ cmd: 'connect', urls, rooms: opts.rooms, count, parallel: opts.parallel, firstId: j * 1_000_000 }, 600_000)
    }),
  )
  const connected = opened.reduce((a, o) => a + o.connected, 0)
  const connectFailures = opened.reduce((a, o) => a + o.failed, 0)
  process.stdout.write(`${connected} connections open in ${fmt((Date.now() - t0) / 1000, 1)} s (${connectFailures} failed)\n`)

  await instances[0].call({ cmd: 'broadcast', everyMs: opts['broadcast-ms'] })
  await Promise.all(loaders.map((l) => l.call({ cmd: 'start', rate: opts.rate / opts.loaders, churn: opts.churn / opts.loaders })))
  // The first sample only starts the windows (lag, deliveries) of minute 1.
  await Promise.all([...instances.map((c) => c.call({ cmd: 'sample' })), ...loaders.map((l) => l.call({ cmd: 'sample' })), ...ports.map(lagP99)])

  const rows = []
  const heaps = instances.map(() => [])
  let publishedBefore = 0
  const isolationsBefore = []
  let errors = connectFailures
  const errorSamples = []
  const started = Date.now()
  for (let minute = 1; minute <= opts.minutes; minute++) {
    await sleep(Math.max(0, started + minute * 60_000 - Date.now()))
    const [samples, lags, clients] = await Promise.all([
      Promise.all(instances.map((c) => c.call({ cmd: 'sample' }))),
      Promise.all(ports.map(lagP99)),
      Promise.all(loaders.map((l) => l.call({ cmd: 'sample' }))),
    ])
    const sum = (k) => clients.reduce((a, c) => a + (c[k] ?? 0), 0)
    const minuteErrors = sum('errors') + sum('sendFailed')
    errors += minuteErrors
    for (const c of clients) errorSamples.push(...c.errorSamples)
    const latencyP99 = Math.max(...clients.map((c) => c.latencyP99).filter(Number.isFinite))
    // What should have arrived: each broadcast at every connection, each SEND at its room's share of
    // them (approximate: connections come and go with the churn).
    const broadcasts = samples[0].published.ok - publishedBefore
    publishedBefore = samples[0].published.ok
    const open = sum('connected')
    const expected = broadcasts * open + sum('sent') * (open / opts.rooms)
    const isolated = samples.map((s, i) => s.isolations - (isolationsBefore[i] ?? 0))
    samples.forEach((s, i) => (isolationsBefore[i] = s.isolations))
    samples.forEach((s, i) => {
      heaps[i].push(s.heapUsed)
      rows.push([
        String(minute),
        `soak-${i}`,
        String(s.sessions),
        mb(s.rss),
        mb(s.heapUsed),
        lags[i] === null ? '?' : fmt(lags[i], 1),
        String(isolated[i]),
        i === 0 ? `${fmt(sum('delivered'))} (${fmt((100 * sum('delivered')) / Math.max(1, expected), 1)} %)` : '',
        i === 0 ? fmt(sum('sent')) : '',
        i === 0 ? `${fmt(sum('replaced'))}/${fmt(sum('closes'))}` : '',
        i === 0 ? fmt(latencyP99) : '',
        i === 0 ? String(minuteErrors) : '',
      ])
    })
    process.stdout.write(
      `minute ${minute}: ${samples.map((s, i) => `soak-${i} ${s.sessions} sessions, RSS ${mb(s.rss)} MB, heap ${mb(s.heapUsed)} MB, lag p99 ${lags[i] === null ? '?' : fmt(lags[i], 1)} ms${isolated[i] > 0 ? `, isolated ${isolated[i]}×` : ''}`).join('; ')}; ` +
        `delivered ${fmt(sum('delivered'))} (~${fmt((100 * sum('delivered')) / Math.max(1, expected), 1)} % of expected), sent ${fmt(sum('sent'))}, connected ${fmt(sum('connected'))}, errors ${minuteErrors}\n`,
    )
  }

  // The clients leave: every instance must be back to zero sessions.
  await Promise.all(loaders.map((l) => l.call({ cmd: 'stop' }, 120_000).catch(() => undefined)))
  let after = null
  for (let i = 0; i < 50; i++) {
    after = await Promise.all(instances.map((c) => c.call({ cmd: 'sample' })))
    if (after.every((s) => s.sessions === 0)) break
    await sleep(200)
  }

  process.stdout.write(`\n${table(['minute', 'instance', 'sessions', 'RSS MB', 'heap MB (after GC)', 'lag p99 ms', 'isolated', 'delivered (of expected)', 'sent', 'replaced/closed', 'latency p99 ms', 'errors'], rows)}\n`)
  const verdicts = heaps.map((h, i) => {
    const first = h[0]
    const last = h[h.length - 1]
    const growth = last - first
    const bound = Math.max(opts['max-heap-growth-mb'] * 2 ** 20, (first * opts['max-heap-growth-pct']) / 100)
    return { instance: `soak-${i}`, first, last, growth, bound, slope: slope(h), flat: h.length < 2 || growth <= bound }
  })
  for (const v of verdicts) {
    process.stdout.write(
      `${v.instance}: heap after GC ${mb(v.first)} MB after minute 1, ${mb(v.last)} MB at the end (${v.growth >= 0 ? '+' : ''}${mb(v.growth)} MB, bound ${mb(v.bound)} MB; slope ${mb(v.slope)} MB/min): ${v.flat ? 'flat' : 'GROWING'}\n`,
    )
  }
  process.stdout.write(`sessions after the clients left: ${after.map((s, i) => `soak-${i} ${s.sessions}`).join(', ')}; heap after GC ${after.map((s) => mb(s.heapUsed)).join(', ')} MB\n`)
  if (errorSamples.length > 0) process.stdout.write(`first errors:\n${errorSamples.slice(0, 10).map((e) => `  ${e}`).join('\n')}\n`)
  const flat = verdicts.every((v) => v.flat)
  const drained = after.every((s) => s.sessions === 0)
  const ok = flat && drained && errors === 0 && connected === opts.connections
  process.stdout.write(`verdict: ${ok ? 'PASS' : 'FAIL'} — memory ${flat ? 'flat' : 'growing'} after warm-up, ${errors} errors, ${connected}/${opts.connections} connected, sessions ${drained ? 'back to 0' : 'left open'}\n`)
  await Promise.all(instances.map((c) => c.stop(10_000)))
  if (!ok) throw new Error('the soak failed')
}

/** Least-squares slope of `ys` (one value per minute), per minute. */
function slope(ys) {
  const n = ys.length
  if (n < 2) return 0
  const mx = (n - 1) / 2
  const my = ys.reduce((a, y) => a + y, 0) / n
  let num = 0
  let den = 0
  ys.forEach((y, x) => {
    num += (x - mx) * (y - my)
    den += (x - mx) ** 2
  })
  return num / den
}

/** The event-loop lag p99 of one instance over the last scrape interval, in ms beyond prom-client's 10 ms sampling floor. */
async function lagP99(port) {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
    const m = /^nodejs_eventloop_lag_p99_seconds\s+(\S+)$/m.exec(text)
    return m ? Math.max(0, Number(m[1]) * 1000 - 10) : null
  } catch {
    return null
  }
}

await runMain(main, { deadlineMs: (opts.minutes + 10) * 60_000 })
