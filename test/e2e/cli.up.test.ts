import { execFile } from 'node:child_process'
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, describe, expect, it } from 'vitest'
import { bin, env as cliEnv, getJson, killProcessesIn, processesIn, root, Up } from '../helpers/cli.js'
import { freeBase } from '../helpers/ports.js'

const run = promisify(execFile)
const app = join(root, 'examples/hello/server.mjs')
type Hello = { instance: string; members: { id: string; status: string }[] }

describe('chorus up', () => {
  let dir = ''
  afterAll(async () => {
    if (!dir) return
    await killProcessesIn(dir)
    await rm(dir, { recursive: true, force: true })
  })

  it('starts embedded PostgreSQL and three instances that list each other, reports them in status, and on Ctrl-C to its process group stops everything and exits 0 without a warning', async () => {
    dir = await mkdtemp(join(tmpdir(), 'chorus-up-'))
    await chmod(dir, 0o755)
    const base = await freeBase()
    const env = cliEnv({ CHORUS_LOG_LEVEL: 'info' })
    const dashboardPort = await freeBase(0)
    const up = new Up(['--instances', '3', '--app', app, '--port', String(base), '--dashboard-port', String(dashboardPort)], dir, { CHORUS_LOG_LEVEL: 'info', CHORUS_DASHBOARD_PASSWORD: 'up-test-password' })
    const output = () => up.output

    const urls = [1, 2, 3].map((i) => `http://127.0.0.1:${base + i}/`)
    const deadline = Date.now() + 60_000
    let views: (Hello | null)[] = []
    while (Date.now() < deadline) {
      views = await Promise.all(urls.map((u) => getJson<Hello>(u)))
      if (views.every((v) => v && v.members.filter((m) => m.status === 'up').length === 3)) break
      await new Promise((r) => setTimeout(r, 250))
    }
    expect(views.map((v) => v?.instance), output()).toEqual(['instance-1', 'instance-2', 'instance-3'])
    for (const v of views) expect(v!.members.map((m) => m.id)).toEqual(['instance-1', 'instance-2', 'instance-3'])

    // The balancer on P spreads requests over the instances; the dashboard wants its password.
    const through = new Set<string>()
    const balancerDeadline = Date.now() + 20_000
    while (through.size < 3 && Date.now() < balancerDeadline) {
      const view = await getJson<Hello>(`http://127.0.0.1:${base}/`)
      if (view) through.add(view.instance)
    }
    expect([...through].sort(), output()).toEqual(['instance-1', 'instance-2', 'instance-3'])
    expect((await fetch(`http://127.0.0.1:${dashboardPort}/api/instances`)).status).toBe(401)
    const basic = `Basic ${Buffer.from('admin:up-test-password').toString('base64')}`
    const listed = (await (await fetch(`http://127.0.0.1:${dashboardPort}/api/instances`, { headers: { authorization: basic } })).json()) as { instances: { id: string }[] }
    expect(listed.instances.map((i) => i.id).sort()).toEqual(['instance-1', 'instance-2', 'instance-3'])

    const statusEnv = env
    const { stdout } = await run(process.execPath, [bin, 'status', '--json'], { cwd: dir, env: statusEnv })
    const rows = JSON.parse(stdout) as { id: string; status: string; url: string; pid: number; epoch: number; heartbeatAgeMs: number }[]
    expect(rows.map((r) => [r.id, r.status, r.url])).toEqual([1, 2, 3].map((i) => [`instance-${i}`, 'up', `http://127.0.0.1:${base + i}`]))
    for (const r of rows) {
      expect(r.pid).toBeGreaterThan(0)
      expect(r.epoch).toBeGreaterThan(0)
    }
    const table = await run(process.execPath, [bin, 'status'], { cwd: dir, env: statusEnv })
    expect(table.stdout).toMatch(/^ID\s+STATUS\s+URL/)
    expect(table.stdout).toMatch(/^LOCKS\s+0 held \(0 exclusive, 0 shared\), 0 waiting$/m)
    const details = JSON.parse((await run(process.execPath, [bin, 'status', '--json', '--details'], { cwd: dir, env: statusEnv })).stdout)
    expect(details.members).toHaveLength(3)
    expect(details.locks).toMatchObject({ held: 0, waiters: 0 })
    expect(Array.isArray(details.jobs.jobs)).toBe(true)
    expect(output()).toMatch(/instance-1 │ .*joined the cluster/)

    // Ctrl-C as a terminal sends it: SIGINT to the whole foreground process group. Only chorus up
    // gets it (the instances and PostgreSQL run in groups of their own) and stops everything in order.
    const before = output().length
    up.interrupt()
    expect(await up.exited, output()).toBe(0)
    expect(output()).toMatch(/chorus +│ .*stopped\n$/)
    expect(up.warnings(before), output()).toEqual([])
    for (const r of rows) expect(() => process.kill(r.pid, 0)).toThrow()
    expect(await processesIn(dir)).toEqual([])
    await expect(run(process.execPath, [bin, 'status'], { cwd: dir, env: statusEnv })).rejects.toMatchObject({ stderr: expect.stringContaining('CHORUS_ERR_CLI_NO_CLUSTER') })
  }, 180_000)

  it('refuses an app that does not exist with a typed error', async () => {
    const err = await run(process.execPath, [bin, 'up', '--app', '/nonexistent/app.mjs'], { cwd: tmpdir() }).catch((e: { stderr: string; code: number }) => e)
    expect((err as { stderr: string }).stderr).toContain('CHORUS_ERR_CLI_APP_NOT_FOUND')
    // A usage error (docs/guide.md, exit codes).
    expect((err as { code: number }).code).toBe(2)
  })
})
