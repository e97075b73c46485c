// Balancer benchmark: autocannon against four front doors to the same three upstream instances
// (`upstream.mjs`: a plain Node HTTP server answering a small body, each a cluster member that
// advertises its URL), side by side in one run:
//   direct     — straight to one instance (the ceiling: no proxy at all);
//   chorus     — the Chorus balancer over the 3, as its own process (`chorus balancer`, round-robin);
//   nginx      — Debian's nginx with the config `chorus nginx` renders (1 worker, least_conn,
//                keep-alive upstream);
//   http-proxy — node http-proxy over the 3 (round-robin, keep-alive agent), as its own process.
// At each connection count (`--connections`), `--rounds` rounds take turns between the targets
// (the order alternates), `--seconds` each; reported: the median round's requests/s and its
// latency p50/p99, errors, non-2xx answers, CPU time of the proxy per request, and how the
// requests spread over the upstreams; then, per connection count, Chorus against nginx and http-proxy
// (req/s ratio, p99, proxy CPU per request) with the goals: ≥ 0.8× nginx (1 worker) and ≥ 2×
// http-proxy in req/s, CPU per request within 2× of nginx's. The 1-minute load average is printed
// at the start, the highest after a round, and at the end: compare ratios within one run.
//
//   node bench/balancer/run.mjs [--connections 50,200] [--seconds 4] [--rounds 3] …
//   node bench/balancer/run.mjs --help
import { execFile, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { loadavg, tmpdir } from 'node:os'
import { join, resolve as resolvePath } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import autocannon from 'autocannon'
import { Child, fmt, machine, median, now, onCleanup, options, runMain, sleep, startDatabase, table } from '../lib/harness.mjs'
import { startNginx } from '../lib/nginx.mjs'

const UPSTREAM = fileURLToPath(new URL('./upstream.mjs', import.meta.url))
const HTTP_PROXY = fileURLToPath(new URL('./http-proxy.mjs', import.meta.url))
const CHORUS = fileURLToPath(new URL('../../bin/chorus.js', import.meta.url))
const TARGETS = ['direct', 'chorus', 'nginx', 'http-proxy']
const TITLES = {
  direct: 'direct to one instance',
  chorus: 'Chorus balancer over 3',
  nginx: 'nginx (1 worker) over 3',
  'http-proxy': 'http-proxy over 3',
}

const opts = options('BENCH_BALANCER', {
  instances: 3,
  connections: '50,200', // autocannon connections, one measurement each
  seconds: 4, // per round and target
  rounds: 3, // per connection count; the median round is reported
  warmup: 2, // seconds per target at the first connection count before measuring
  only: '', // comma-separated subset of direct,chorus,nginx,http-proxy
  'chorus-bin': '', // another build's bin/chorus.js to run as the balancer (default: this repository's), e.g. to compare a change
  deadline: 230_000, // ms before the whole run is stopped
  json: false, // also print the results as one JSON line
  profile: '', // a directory: write a V8 CPU profile of the Chorus balancer there
})
const targets = opts.only ? opts.only.split(',').map((s) => s.trim()) : TARGETS
for (const t of targets) if (!TARGETS.includes(t)) throw new Error(`--only takes a subset of ${TARGETS.join(',')}`)
const connectionCounts = String(opts.connections)
  .split(',')
  .map(Number)
  .filter((n) => n > 0)
if (connectionCounts.length === 0) throw new Error('--connections must list at least one count')

// ---- processes -----------------------------------------------------------------------------

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

/** A process that is not a harness child (the `chorus` CLI): SIGTERM at cleanup, SIGKILL if it lingers. */
function spawnProcess(args, env) {
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  let output = ''
  child.stdout.on('data', (d) => (output += d))
  onCleanup(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
    await exited
    clearTimeout(timer)
  })
  return { child, exited, output: () => output, cpuMs: () => processCpuMs(child.pid) }
}

/** CPU time (user + system, ms) of one process so far; null without /proc. */
function processCpuMs(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100
  } catch {
    return null
  }
}

/** Resolves once `url` has answered 200 from every upstream id in `ids` (the proxy sees them all). */
async function reachesAll(url, ids, what) {
  const seen = new Set()
  const until = now() + 30_000
  while (now() < until) {
    try {
      const res = await fetch(url)
      const text = await res.text()
      if (res.status === 200) seen.add(text.trim().replace('hello from ', ''))
      if (ids.every((id) => seen.has(id))) return
    } catch {
      /* not listening yet */
    }
    await sleep(20)
  }
  throw new Error(`${what} did not reach all of ${ids.join(', ')} within 30 s (saw ${[...seen].join(', ') || 'none'})`)
}

async function setup(db) {
  const upstreams = Array.from({ length: opts.instances }, (_, i) => new Child(UPSTREAM, [], { DATABASE_URL: db.url, BENCH_INDEX: String(i) }))
  const ready = await Promise.all(upstreams.map((u) => u.waitFor((m) => m.type === 'ready', 60_000, 'upstream ready')))
  const ids = ready.map((m) => m.id)
  const urls = ready.map((m) => `http://127.0.0.1:${m.port}`)
  const front = {}
  const cpu = {}
  if (targets.includes('direct')) {
    front.direct = `${urls[0]}/`
    cpu.direct = null
  }
  if (targets.includes('chorus')) {
    const port = await freePort()
    const prof = opts.profile ? ['--cpu-prof', '--cpu-prof-dir', opts.profile, '--cpu-prof-name', 'chorus-balancer.cpuprofile'] : []
    const p = spawnProcess([...prof, opts['chorus-bin'] ? resolvePath(opts['chorus-bin']) : CHORUS, 'balancer', '--port', String(port), '--database-url', db.url], { CHORUS_LOG_LEVEL: 'warn' })
    front.chorus = `http://127.0.0.1:${port}/`
    cpu.chorus = p.cpuMs
    await reachesAll(front.chorus, ids, 'the Chorus balancer')
  }
  if (targets.includes('nginx')) {
    const dir = await mkdtemp(join(tmpdir(), 'chorus-bench-nginx-'))
    onCleanup(() => rm(dir, { recursive: true, force: true }))
    await chmod(dir, 0o755)
    const port = await freePort()
    const config = join(dir, 'nginx.conf')
    // The config is what `chorus nginx` renders from the live membership; wait until it lists all.
    for (let i = 0; ; i++) {
      await promisify(execFile)(process.execPath, [CHORUS, 'nginx', '--out', config, '--listen', `127.0.0.1:${port}`, '--run-dir', dir, '--database-url', db.url], {
        env: { ...process.env, CHORUS_LOG_LEVEL: 'warn' },
      })
      if ((readFileSync(config, 'utf8').match(/^\s+server 127\.0\.0\.1:\d+ /gm) ?? []).length === opts.instances) break
      if (i > 50) throw new Error('chorus nginx did not list every instance')
      await sleep(200)
    }
    const nginx = await startNginx({ config, dir, port })
    front.nginx = `http://127.0.0.1:${port}/`
    cpu.nginx = nginx.cpuMs
    await reachesAll(front.nginx, ids, 'nginx')
  }
  if (targets.includes('http-proxy')) {
    const proxy = new Child(HTTP_PROXY, [urls.join(',')])
    const { port } = await proxy.waitFor((m) => m.type === 'ready', 30_000, 'http-proxy ready')
    front['http-proxy'] = `http://127.0.0.1:${port}/`
    cpu['http-proxy'] = () => processCpuMs(proxy.pid)
    await reachesAll(front['http-proxy'], ids, 'http-proxy')
  }
  return { upstreams, front, cpu }
}

// ---- measurement -----------------------------------------------------------------------------

async function load(url, connections, seconds) {
  const r = await autocannon({ url, connections, duration: seconds, pipelining: 1, timeout: 10 })
  const ok = r['2xx'] ?? 0
  return {
    rps: ok / r.duration,
    ok,
    p50: r.latency.p50,
    p99: r.latency.p99,
    max: r.latency.max,
    errors: r.errors,
    timeouts: r.timeouts,
    non2xx: r.non2xx,
  }
}

async function upstreamCpuUs(upstreams) {
  return (await Promise.all(upstreams.map((u) => u.call({ cmd: 'cpu' })))).reduce((n, m) => n + m.cpuUs, 0)
}

async function served(upstreams) {
  return (await Promise.all(upstreams.map((u) => u.call({ cmd: 'served' })))).map((m) => m.served)
}

/** The highest 1-minute load average seen after a measured round. */
let highestLoad = 0

async function measure(s) {
  if (opts.warmup > 0) {
    process.stderr.write('warm-up …\n')
    for (const t of targets) await load(s.front[t], connectionCounts[0], opts.warmup)
  }
  const rows = []
  for (const connections of connectionCounts) {
    const runs = Object.fromEntries(targets.map((t) => [t, []]))
    for (let k = 0; k < opts.rounds; k++) {
      const order = k % 2 === 0 ? targets : [...targets].reverse()
      for (const t of order) {
        const before = await served(s.upstreams)
        const cpu0 = s.cpu[t]?.() ?? null
        const up0 = await upstreamCpuUs(s.upstreams)
        const self0 = process.cpuUsage()
        const r = await load(s.front[t], connections, opts.seconds)
        highestLoad = Math.max(highestLoad, loadavg()[0])
        const self1 = process.cpuUsage(self0)
        const up1 = await upstreamCpuUs(s.upstreams)
        const cpu1 = s.cpu[t]?.() ?? null
        const after = await served(s.upstreams)
        r.upstreamUsPerReq = (up1 - up0) / Math.max(1, r.ok)
        r.loadUsPerReq = (self1.user + self1.system) / Math.max(1, r.ok)
        r.spread = after.map((n, i) => n - before[i])
        r.proxyUsPerReq = cpu0 === null || cpu1 === null ? null : ((cpu1 - cpu0) * 1000) / Math.max(1, r.ok)
        runs[t].push(r)
        process.stderr.write(`${t} @ ${connections} connections, round ${k + 1}: ${fmt(r.rps)} req/s, p50 ${fmt(r.p50, 1)} ms, p99 ${fmt(r.p99, 1)} ms${r.errors + r.non2xx ? `, ${r.errors} errors, ${r.non2xx} non-2xx` : ''}\n`)
        await sleep(200)
      }
    }
    for (const t of targets) {
      const rs = runs[t]
      const mid = [...rs].sort((a, b) => a.rps - b.rps)[Math.floor((rs.length - 1) / 2)]
      const spread = rs.reduce((acc, r) => acc.map((n, i) => n + r.spread[i]), new Array(opts.instances).fill(0))
      const total = spread.reduce((a, b) => a + b, 0)
      rows.push({
        target: t,
        connections,
        rps: mid.rps,
        p50: mid.p50,
        p99: mid.p99,
        rounds: rs.map((r) => r.rps),
        p99s: rs.map((r) => r.p99),
        errors: rs.reduce((n, r) => n + r.errors, 0),
        non2xx: rs.reduce((n, r) => n + r.non2xx, 0),
        proxyUsPerReq: rs.some((r) => r.proxyUsPerReq === null) ? null : median(rs.map((r) => r.proxyUsPerReq)),
        upstreamUsPerReq: median(rs.map((r) => r.upstreamUsPerReq)),
        loadUsPerReq: median(rs.map((r) => r.loadUsPerReq)),
        spread: spread.map((n) => (total ? Math.round((100 * n) / total) : 0)),
      })
    }
  }
  return rows
}

// ---- report ----------------------------------------------------------------------------------

function report(rows, environment) {
  const out = (s) => process.stdout.write(s)
  out(
    `\nBalancer benchmark: autocannon (in the coordinating process, HTTP/1.1 keep-alive, no pipelining) against ${opts.instances} upstream Node HTTP servers ` +
      `answering a ${'hello from upstream-0\n'.length}-byte body; ${opts.rounds} rounds of ${opts.seconds} s per target and connection count, taking turns; the median round is shown.\n${environment}\n\n`,
  )
  out(
    table(
      ['target', 'conns', 'req/s', 'p50 ms', 'p99 ms', 'req/s per round', 'p99 per round', 'errors', 'non-2xx', 'proxy µs/req', 'upstreams µs/req', 'autocannon µs/req', 'upstream spread %'],
      rows.map((r) => [
        TITLES[r.target],
        fmt(r.connections),
        fmt(r.rps),
        fmt(r.p50, 0),
        fmt(r.p99, 0),
        r.rounds.map((x) => fmt(x)).join(' / '),
        r.p99s.map((x) => fmt(x)).join(' / '),
        fmt(r.errors),
        fmt(r.non2xx),
        fmt(r.proxyUsPerReq, 1),
        fmt(r.upstreamUsPerReq, 1),
        fmt(r.loadUsPerReq, 1),
        r.spread.join('/'),
      ]),
    ) + '\n',
  )
  out(
    'µs/req: CPU time (user + system) per answered request of the proxy (nginx: master and worker), of the three upstreams together, and of autocannon. ' +
      'Latencies are whole milliseconds (autocannon).\n',
  )
  const ratios = {}
  for (const connections of connectionCounts) {
    const at = (t) => rows.find((r) => r.target === t && r.connections === connections)
    const c = at('chorus')
    if (!c) continue
    out(`\nat ${connections} connections:`)
    for (const [peer, goal] of [
      ['nginx', 0.8],
      ['http-proxy', 2],
    ]) {
      const p = at(peer)
      if (!p) continue
      const x = c.rps / p.rps
      ;(ratios[connections] ??= {})[peer] = { rps: x, p99: c.p99 / p.p99 }
      out(`\n  Chorus / ${peer}: ${fmt(x, 2)}× req/s (${fmt(c.rps)} vs ${fmt(p.rps)}; goal ≥ ${goal}×: ${x >= goal ? 'met' : 'NOT met'}), p99 ${fmt(c.p99)} vs ${fmt(p.p99)} ms`)
    }
    const n = at('nginx')
    if (n?.proxyUsPerReq && c.proxyUsPerReq) {
      const x = c.proxyUsPerReq / n.proxyUsPerReq
      ;((ratios[connections] ??= {}).nginx ??= {}).cpuPerReq = x
      out(`\n  proxy CPU per request: Chorus ${fmt(c.proxyUsPerReq, 1)} µs vs nginx ${fmt(n.proxyUsPerReq, 1)} µs = ${fmt(x, 2)}× (goal ≤ 2×: ${x <= 2 ? 'met' : 'NOT met'})`)
    }
    const d = at('direct')
    if (d) out(`\n  Chorus / direct: ${fmt(c.rps / d.rps, 2)}× req/s`)
    // Requests per CPU-second of the proxy itself: what each would serve with a core to itself,
    // much less sensitive than req/s to what else the machine runs.
    const perCore = (r) => (r?.proxyUsPerReq ? 1e6 / r.proxyUsPerReq : null)
    const efficiency = ['chorus', 'nginx', 'http-proxy'].filter((t) => perCore(at(t))).map((t) => `${t} ${fmt(perCore(at(t)))}`)
    if (efficiency.length > 1) {
      out(`\n  requests per CPU-second of the proxy: ${efficiency.join(', ')}`)
      for (const peer of ['nginx', 'http-proxy']) {
        if (perCore(c) && perCore(at(peer))) {
          const x = perCore(c) / perCore(at(peer))
          ;((ratios[connections] ??= {})[peer] ??= {}).perCpu = x
          out(`; Chorus / ${peer} ${fmt(x, 2)}×`)
        }
      }
    }
    out('\n')
  }
  if (opts.json) out(JSON.stringify({ options: opts, rows, ratios }) + '\n')
}

// ---- main ------------------------------------------------------------------------------------

await runMain(
  async () => {
    const startLoad = loadavg()[0].toFixed(2)
    const db = await startDatabase()
    const s = await setup(db)
    const rows = await measure(s)
    report(rows, `${machine()} at the end (1-minute load ${startLoad} at the start, highest after a round ${highestLoad.toFixed(2)})`)
  },
  { deadlineMs: opts.deadline },
)
