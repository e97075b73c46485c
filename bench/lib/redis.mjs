// A throwaway local Redis for reference rows: redis-server from Debian's package (installed with
// apt-get when missing; needs root), started on 127.0.0.1 on a free port without persistence, and
// stopped by the harness's cleanup however the benchmark ends.
import { execFileSync, spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { onCleanup, sleep } from './harness.mjs'

/** Starts redis-server and resolves with its port, its pid (for CPU accounting) and an ioredis client connected to it. */
export async function startRedis() {
  const port = await freePort()
  const server = spawn(redisServer(), ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'ignore', 'inherit'],
  })
  const exited = new Promise((resolve) => server.once('exit', resolve))
  onCleanup(async () => {
    if (server.exitCode === null && server.signalCode === null) server.kill('SIGTERM')
    await exited
  })
  const { default: Redis } = await import('ioredis')
  const client = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 1 })
  for (let i = 0; ; i++) {
    try {
      await client.connect()
      break
    } catch (err) {
      if (i > 50) throw err
      await sleep(100)
    }
  }
  onCleanup(() => client.quit().catch(() => client.disconnect()))
  return { port, url: `redis://127.0.0.1:${port}`, pid: server.pid, client }
}

function redisServer() {
  const which = () => {
    try {
      return execFileSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).trim()
    } catch {
      return ''
    }
  }
  let path = which()
  if (path) return path
  process.stderr.write('redis-server not found: installing Debian package redis-server …\n')
  const apt = (args) => execFileSync('apt-get', args, { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
  try {
    apt(['install', '-y', '-q', 'redis-server'])
  } catch {
    apt(['update', '-q'])
    apt(['install', '-y', '-q', 'redis-server'])
  }
  path = which()
  if (!path) throw new Error('redis-server is still missing after apt-get install')
  return path
}

/** A TCP port free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}
