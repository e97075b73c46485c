// The http-proxy reference of the balancer benchmark: node http-proxy in front of the upstreams
// given in argv (comma-separated URLs), round-robin, upstream connections kept alive by one agent
// (at most 64 per upstream, as the Chorus balancer's pools). Listens on 127.0.0.1 on a free port.
import { Agent, createServer } from 'node:http'
import httpProxy from 'http-proxy'
import { serveParent } from '../lib/harness.mjs'

const targets = process.argv[2].split(',')
const agent = new Agent({ keepAlive: true, maxSockets: 64, maxFreeSockets: 64 })
const proxy = httpProxy.createProxyServer({ agent, xfwd: true })
proxy.on('error', (_err, _req, res) => {
  if (res.headersSent === false) res.writeHead(502, { 'content-type': 'text/plain' })
  res.end?.('bad gateway')
})
let next = 0
const server = createServer((req, res) => {
  const target = targets[next]
  next = (next + 1) % targets.length
  proxy.web(req, res, { target })
})
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))

serveParent({
  async cpu() {
    const d = process.cpuUsage()
    return { cpuUs: d.user + d.system }
  },
  async stop() {
    server.closeAllConnections()
    agent.destroy()
    setImmediate(() => process.exit(0))
    return {}
  },
})
process.send?.({ type: 'ready', port: server.address().port })
