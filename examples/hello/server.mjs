// The smallest Chorus app: joins the cluster and answers GET / with its instance id and the live
// members. Run three of it with `npx chorus up --app examples/hello/server.mjs`.
import { createServer } from 'node:http'
import { createCluster } from 'chorus'

// A start that fails (database unreachable, a pooler without CHORUS_DIRECT_URL, a bad option) says
// why in one line, with its CHORUS_ERR_ code.
const cluster = await createCluster().catch((err) => {
  process.stderr.write(`${err.code ?? 'error'}: ${err.message}\n`)
  process.exit(1)
})
const port = Number(process.env.PORT ?? 8081)

const server = createServer((req, res) => {
  // Prometheus metrics of this instance (membership, bus, locks, jobs, caches, realtime, HTTP).
  if (req.url === '/metrics') return cluster.metrics.handler(req, res)
  // /health/live and /health/ready (200 or 503): the balancer routes only to ready instances.
  if (req.url?.startsWith('/health/')) return cluster.health.handler(req, res)
  if (req.method !== 'GET' || req.url !== '/') {
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}')
    return
  }
  const body = {
    instance: cluster.instanceId,
    epoch: cluster.members.self.epoch,
    state: cluster.state,
    members: cluster.members.list().map((m) => ({ id: m.instanceId, status: m.status, url: m.advertiseUrl, epoch: m.epoch })),
  }
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body, null, 2))
})

cluster.metrics.instrument(server)
server.listen(port, '127.0.0.1', () => cluster.log.info({ port }, `hello listening on http://127.0.0.1:${port}`))

cluster.on('member:up', ({ member }) => cluster.log.info(`${member.instanceId} is up`))
cluster.on('member:down', ({ member, reason }) => cluster.log[reason === 'left' ? 'info' : 'warn'](`${member.instanceId} is down (${reason})`))

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, async () => {
    server.close()
    await cluster.close()
    process.exit(0)
  })
}
