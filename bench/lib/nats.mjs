// A throwaway local NATS for the benchmarks' broker rows: nats-server from Debian's package
// (scripts/install-system-deps.sh installs it), started on 127.0.0.1 on a free port, ready when its
// log says so, and stopped by the harness's cleanup however the benchmark ends.
import { execFileSync, spawn } from 'node:child_process'
import { accessSync, constants } from 'node:fs'
import { onCleanup, sleep } from './harness.mjs'
import { freePort } from './redis.mjs'

/** Starts nats-server and resolves with its URL and pid (for CPU accounting: `processCpuMs(pid)`). */
export async function startNats() {
  const port = await freePort()
  const server = spawn(natsServer(), ['-a', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'ignore', 'pipe'] })
  const exited = new Promise((resolve) => server.once('exit', resolve))
  onCleanup(async () => {
    if (server.exitCode === null && server.signalCode === null) server.kill('SIGTERM')
    await exited
  })
  let log = ''
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`nats-server did not start within 15 s:\n${log}`)), 15_000)
    server.stderr.on('data', (chunk) => {
      log += chunk
      if (/Server is ready/.test(log)) {
        clearTimeout(timer)
        resolve()
      }
    })
    server.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`nats-server exited (${code}):\n${log}`))
    })
  })
  server.stderr.resume()
  await sleep(50)
  return { port, url: `nats://127.0.0.1:${port}`, pid: server.pid }
}

function natsServer() {
  for (const p of ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server']) {
    try {
      accessSync(p, constants.X_OK)
      return p
    } catch {
      /* not there */
    }
  }
  try {
    return execFileSync('sh', ['-c', 'command -v nats-server'], { encoding: 'utf8' }).trim()
  } catch {
    throw new Error('nats-server is not installed (scripts/install-system-deps.sh installs it)')
  }
}
