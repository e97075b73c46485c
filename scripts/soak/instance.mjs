// One instance of the soak: a cluster member (dist/) serving STOMP over WebSocket on 127.0.0.1 and
// its Prometheus metrics at /metrics (where the soak reads its event-loop lag). Driven over IPC by
// scripts/soak/run.mjs: `sample` (memory after a full GC, sessions, isolations), `broadcast` (publish to
// every subscriber of /topic/soak/all at a pace), `stop`.
//
// Environment: DATABASE_URL, SOAK_INDEX, SOAK_CONNECTIONS (raises the per-address connection limit:
// every soak client comes from 127.0.0.1).
import { createServer } from 'node:http'
import { serveParent, sleep } from '../../bench/lib/harness.mjs'
import { createCluster } from '../../dist/index.js'

const index = Number(process.env.SOAK_INDEX ?? 0)
const cluster = await createCluster({ databaseUrl: process.env.DATABASE_URL, instanceId: `soak-${index}`, preset: 'local', logLevel: 'warn' })
const server = createServer((req, res) => {
  if (req.url === '/metrics') return cluster.metrics.handler(req, res)
  res.writeHead(404).end()
})
cluster.realtime.attach(server, {
  // Each soak client connects with its own login; anyone may subscribe to the soak topics, a signed-in client may send to them.
  authenticate: (_req, headers) => (headers?.login ? { name: headers.login } : null),
  authorize: (principal, action, destination) => destination.startsWith('/topic/soak/') && (action === 'subscribe' || principal !== null),
  heartbeat: { send: 10_000, receive: 10_000 },
  limits: { maxConnectionsPerAddress: Number(process.env.SOAK_CONNECTIONS ?? 1000) + 100 },
})
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))

let broadcasting = null
const published = { ok: 0, failed: 0 }
// Times this instance could not renew its membership in time (a stalled event loop or database) and isolated itself.
let isolations = 0
cluster.on('member:self:isolated', () => isolations++)

serveParent({
  async sample() {
    globalThis.gc?.()
    const m = process.memoryUsage()
    const rt = cluster.realtime
    return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, sessions: rt.localSessions, delivered: rt.stats.delivered, published: { ...published }, isolations }
  },

  /** Publishes `<seq>|<ms>` to /topic/soak/all every `everyMs` until stopped. */
  async broadcast({ everyMs }) {
    let seq = 0
    broadcasting = setInterval(() => {
      cluster.realtime.publish('/topic/soak/all', `${seq++}|${Date.now()}`).then(
        () => published.ok++,
        () => published.failed++,
      )
    }, everyMs)
    return {}
  },

  async stop() {
    if (broadcasting) clearInterval(broadcasting)
    await Promise.race([cluster.close(), sleep(5000)])
    setImmediate(() => process.exit(0))
    return {}
  },
})
process.send?.({ type: 'ready', port: server.address().port })
