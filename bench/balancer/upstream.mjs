// One upstream instance of the balancer benchmark: a plain Node HTTP server answering a small body
// on every path (and `/health`), which is also a cluster member advertising its URL, so the Chorus
// balancer and `chorus nginx` find it in the membership. Environment: DATABASE_URL, BENCH_INDEX.
import { createServer } from 'node:http'
import { createCluster } from '../../dist/index.js'
import { serveParent, sleep } from '../lib/harness.mjs'

const index = Number(process.env.BENCH_INDEX ?? 0)
const id = `upstream-${index}`
const body = Buffer.from(`hello from ${id}\n`)
let served = 0

const server = createServer((req, res) => {
  served++
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length })
  res.end(body)
})
server.keepAliveTimeout = 60_000 // longer than any proxy's idle upstream connection
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
const { port } = server.address()

const cluster = await createCluster({
  databaseUrl: process.env.DATABASE_URL,
  instanceId: id,
  advertiseUrl: `http://127.0.0.1:${port}`,
  preset: 'local',
  logLevel: 'error',
})

serveParent({
  async served() {
    return { served }
  },
  async cpu() {
    const d = process.cpuUsage()
    return { cpuUs: d.user + d.system }
  },
  async stop() {
    await Promise.race([cluster.close(), sleep(3000)])
    server.closeAllConnections()
    setImmediate(() => process.exit(0))
    return {}
  },
})
process.send?.({ type: 'ready', id, port })
