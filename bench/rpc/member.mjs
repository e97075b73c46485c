// One RPC member for the RPC benchmark: an HTTP server on a free port serving the cluster's RPC
// path and, beside it, a plain JSON echo route (`POST /plain`) — the baseline, same server, same
// process. Joins from its environment and answers the coordinator over IPC.
import { createServer } from 'node:http'
import { createCluster } from '../../dist/index.js'
import { serveParent } from '../lib/harness.mjs'

const server = createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/plain') {
    const parts = []
    req.on('data', (c) => parts.push(c))
    req.on('end', () => {
      const payload = JSON.parse(Buffer.concat(parts).toString('utf8'))
      const body = JSON.stringify({ result: payload })
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    })
    return
  }
  res.statusCode = 404
  res.end()
})
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
const port = server.address().port
const cluster = await createCluster({ advertiseUrl: `http://127.0.0.1:${port}`, logLevel: process.env.CHORUS_LOG_LEVEL ?? 'error' })
cluster.rpc.attach(server)
cluster.rpc.handle('echo', (payload) => payload)

serveParent({
  async stop() {
    await cluster.close()
    server.close()
    setImmediate(() => process.exit(0))
    return {}
  },
})
process.send?.({ type: 'ready', id: cluster.instanceId, port })
