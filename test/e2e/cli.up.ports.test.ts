// `chorus up` checks every port before it starts anything: a taken one ends the run in one line that
// names it and the option to change it, with nothing started; a failure after the embedded
// PostgreSQL has started stops it again. Checked with the processes left in the run's directory.
import { existsSync } from 'node:fs'
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { chorus, killProcessesIn, processesIn, root } from '../helpers/cli.js'
import { freeBase } from '../helpers/ports.js'

const app = join(root, 'examples/hello/server.mjs')

function occupy(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer().once('error', reject)
    server.listen(port, '127.0.0.1', () => resolve(server))
  })
}

describe('chorus up and its ports', () => {
  let dir = ''
  let taken: Server | null = null
  afterEach(async () => {
    await new Promise((r) => (taken ? taken.close(r) : r(undefined)))
    taken = null
    if (!dir) return
    await killProcessesIn(dir)
    await rm(dir, { recursive: true, force: true })
  })

  it('names a taken balancer, instance, dashboard or PostgreSQL port in one line, exits 2, and starts nothing', async () => {
    dir = await mkdtemp(join(tmpdir(), 'chorus-up-ports-'))
    await chmod(dir, 0o755)
    const base = await freeBase(4)
    const dashboard = base + 4
    const pg = await freeBase(0)
    const args = ['up', '--app', app, '--instances', '2', '--port', String(base), '--dashboard-port', String(dashboard), '--pg-port', String(pg)]
    const cases: [number, string][] = [
      [base, `port ${base} (the balancer) is in use; choose another with --port, or --no-balancer`],
      [base + 2, `port ${base + 2} (instance-2, --port + 2) is in use; choose another base port with --port`],
      [dashboard, `port ${dashboard} (the dashboard) is in use; choose another with --dashboard-port, or --no-dashboard`],
      [pg, `port ${pg} (the embedded PostgreSQL) is in use; choose another with --pg-port, or leave it out for a free one`],
    ]
    for (const [port, says] of cases) {
      taken = await occupy(port)
      const run = await chorus(args, dir)
      expect(run.stderr).toBe(`chorus: CHORUS_ERR_CLI_PORT_IN_USE ${says}\n`)
      expect(run.stdout).toBe('')
      expect(run.code).toBe(2)
      expect(await processesIn(dir)).toEqual([])
      expect(existsSync(join(dir, '.chorus/postgres'))).toBe(false)
      await new Promise((r) => taken!.close(r))
      taken = null
    }
  }, 180_000)

  it('refuses a dashboard port that is also an instance port', async () => {
    dir = await mkdtemp(join(tmpdir(), 'chorus-up-ports-'))
    const base = await freeBase(2)
    const run = await chorus(['up', '--app', app, '--instances', '2', '--port', String(base), '--dashboard-port', String(base + 1)], dir)
    expect(run.stderr).toBe(`chorus: CHORUS_ERR_CLI_PORT_IN_USE port ${base + 1} (the dashboard, and instance-1, --port + 1) is in use; choose another with --dashboard-port, or --no-dashboard\n`)
    expect(run.code).toBe(2)
  }, 60_000)

  it('stops the embedded PostgreSQL it started when a later step fails, and leaves nothing running', async () => {
    dir = await mkdtemp(join(tmpdir(), 'chorus-up-late-'))
    await chmod(dir, 0o755)
    const base = await freeBase(1)
    const refused = await freeBase(0)
    // The direct URL is checked after PostgreSQL has started: that check fails.
    const run = await chorus(['up', '--app', app, '--instances', '1', '--port', String(base), '--no-dashboard'], dir, { CHORUS_DIRECT_URL: `postgres://app@127.0.0.1:${refused}/app` })
    expect(run.stderr).toBe(`chorus: CHORUS_ERR_DB_CONNECT cannot reach PostgreSQL at 127.0.0.1:${refused}/app (user app): connection refused\n`)
    expect(run.code).toBe(3)
    expect(run.stdout).toMatch(/PostgreSQL ready on/)
    expect(run.stdout).toMatch(/stopping PostgreSQL/)
    expect(existsSync(join(dir, '.chorus/postgres/PG_VERSION'))).toBe(true)
    expect(existsSync(join(dir, '.chorus/postgres/postmaster.pid'))).toBe(false)
    expect(await processesIn(dir)).toEqual([])
  }, 120_000)
})
