// A throwaway nginx for reference rows: Debian's package (installed with apt-get when missing;
// needs root), run in the foreground (`daemon off`) with a given config in its own process group,
// and stopped with its workers by the harness's cleanup however the benchmark ends.
import { execFileSync, spawn } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'
import { connect } from 'node:net'
import { onCleanup, sleep } from './harness.mjs'

/** The nginx binary, installing Debian's package when it is missing. */
export function nginxBinary() {
  const which = () => {
    try {
      return execFileSync('sh', ['-c', 'command -v nginx || ls /usr/sbin/nginx'], { encoding: 'utf8' }).trim().split('\n')[0]
    } catch {
      return ''
    }
  }
  let path = which()
  if (path) return path
  process.stderr.write('nginx not found: installing Debian package nginx …\n')
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  const apt = (args) => execFileSync('apt-get', args, { stdio: ['ignore', 'ignore', 'inherit'], env })
  try {
    apt(['install', '-y', '-q', '--no-install-recommends', 'nginx'])
  } catch {
    apt(['update', '-q'])
    apt(['install', '-y', '-q', '--no-install-recommends', 'nginx'])
  }
  // The package may start a default server on port 80; the benchmark runs its own.
  try {
    execFileSync('sh', ['-c', 'service nginx stop'], { stdio: 'ignore' })
  } catch {
    /* no service manager, or not running */
  }
  path = which()
  if (!path) throw new Error('nginx is still missing after apt-get install')
  return path
}

/**
 * Checks `config` with `nginx -t`, starts nginx with it (prefix `dir`) and resolves once
 * 127.0.0.1:`port` accepts connections. `cpuMs()` sums the CPU time of the master and its workers.
 */
export async function startNginx({ config, dir, port }) {
  const bin = nginxBinary()
  const args = ['-e', 'stderr', '-p', dir, '-c', config]
  execFileSync(bin, ['-t', '-q', ...args], { stdio: ['ignore', 'ignore', 'inherit'] })
  const child = spawn(bin, [...args, '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'inherit'], detached: true })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  onCleanup(async () => {
    const group = (signal) => {
      try {
        process.kill(-child.pid, signal)
      } catch {
        /* already gone */
      }
    }
    group('SIGTERM') // fast shutdown of the master and its workers
    const timer = setTimeout(() => group('SIGKILL'), 3000)
    await exited
    clearTimeout(timer)
    group('SIGKILL') // a worker left behind by a killed master
  })
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`nginx exited with code ${child.exitCode}`)
    if (await accepts(port)) break
    if (i > 100) throw new Error(`nginx is not listening on 127.0.0.1:${port}`)
    await sleep(50)
  }
  return { pid: child.pid, cpuMs: () => groupCpuMs(child.pid) }
}

function accepts(port) {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    s.once('connect', () => (s.destroy(), resolve(true)))
    s.once('error', () => resolve(false))
  })
}

/** CPU time (user + system, ms) of every live process in process group `pgid`; null without /proc. */
export function groupCpuMs(pgid) {
  try {
    let ticks = 0
    for (const name of readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue
      let stat
      try {
        stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      } catch {
        continue
      }
      // Fields after the parenthesised command: state ppid pgrp … utime(14) stime(15), counted from 1.
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(f[2]) === pgid) ticks += Number(f[11]) + Number(f[12])
    }
    return (ticks * 1000) / 100 // USER_HZ is 100 on Linux
  } catch {
    return null
  }
}
