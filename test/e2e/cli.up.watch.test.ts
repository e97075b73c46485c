// `chorus up --watch`: a change in the app's directory restarts the instances one at a time (drain,
// stop, start, ready), so a steady load through the balancer sees no failed request, and every
// instance runs in a new process afterwards.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { chorus, getJson, killProcessesIn, processesIn, root, Up } from '../helpers/cli.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { freeBase } from '../helpers/ports.js'

const hello = join(root, 'examples/hello/server.mjs')

describe('chorus up --watch', () => {
  let db: TestDatabase | undefined
  let dir = ''
  afterAll(async () => {
    if (dir) {
      await killProcessesIn(dir)
      await rm(dir, { recursive: true, force: true })
    }
    await db?.drop()
  })

  it('restarts every instance once on a change, one at a time, and loses no request through the balancer', async () => {
    db = await testDatabase()
    dir = await mkdtemp(join(tmpdir(), 'chorus-up-watch-'))
    const appDir = join(dir, 'app')
    await mkdir(appDir)
    await writeFile(join(appDir, 'server.mjs'), `await import(${JSON.stringify(pathToFileURL(hello).href)})\n`)
    const base = await freeBase(3)
    const up = new Up(['--instances', '3', '--app', join(appDir, 'server.mjs'), '--port', String(base), '--no-dashboard', '--watch'], dir, { CHORUS_LOG_LEVEL: 'info', DATABASE_URL: db.url })
    const output = () => up.output
    await up.waitFor(/watching .* for changes/, 60_000)

    // Every instance up and reached through the balancer.
    const deadline = Date.now() + 60_000
    const seen = new Set<string>()
    while (seen.size < 3 && Date.now() < deadline) {
      const view = await getJson<{ instance: string }>(`http://127.0.0.1:${base}/`)
      if (view) seen.add(view.instance)
    }
    expect([...seen].sort(), output()).toEqual(['instance-1', 'instance-2', 'instance-3'])
    const pids = async () => {
      const run = await chorus(['status', '--json'], dir, { DATABASE_URL: db!.url })
      return Object.fromEntries((JSON.parse(run.stdout) as { id: string; pid: number; status: string }[]).filter((m) => m.status === 'up').map((m) => [m.id, m.pid]))
    }
    const before = await pids()
    expect(Object.keys(before).sort()).toEqual(['instance-1', 'instance-2', 'instance-3'])

    // A steady GET load through the balancer: four clients, one request after another each.
    let loading = true
    let ok = 0
    const failures: string[] = []
    const client = async () => {
      while (loading) {
        try {
          const res = await fetch(`http://127.0.0.1:${base}/`, { signal: AbortSignal.timeout(10_000) })
          await res.arrayBuffer()
          if (res.status >= 200 && res.status < 300) ok++
          else failures.push(`status ${res.status}`)
        } catch (err) {
          failures.push(String((err as Error).cause ?? err))
        }
      }
    }
    const clients = Array.from({ length: 4 }, client)
    while (ok < 50) await new Promise((r) => setTimeout(r, 20))

    const mark = output().length
    await writeFile(join(appDir, 'changed.txt'), 'a change\n')
    await up.waitFor(/rolling restart done/, 180_000, mark)
    const during = ok
    loading = false
    await Promise.all(clients)

    const restarted = output().slice(mark).match(/instance-\d restarted \(pid \d+\) and ready/g)
    expect(restarted?.map((l) => l.slice(0, 10)), output()).toEqual(['instance-1', 'instance-2', 'instance-3'])
    console.log(`rolling restart under load: ${during} requests answered 2xx, ${failures.length} failed`)
    expect(failures, output()).toEqual([])
    const after = await pids()
    for (const id of ['instance-1', 'instance-2', 'instance-3']) expect(after[id], id).not.toBe(before[id])

    up.interrupt()
    expect(await up.exited, output()).toBe(0)
    expect(await processesIn(dir)).toEqual([])
  }, 300_000)
})
