// `chorus up` supervises what it runs: a killed instance or balancer is started again, an app that
// crashes at once is given up in one line and ends the run, `--app` takes a directory — all with
// real processes, and nothing left running in the run's directory afterwards.
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { chorus, getJson, killProcessesIn, processesIn, root, Up } from '../helpers/cli.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { freeBase } from '../helpers/ports.js'

const hello = join(root, 'examples/hello/server.mjs')
type Hello = { instance: string; epoch: number }
// A bounded wait, not a measure (the measured time is printed): the restart delay is 0.1 s, and the
// restart takes the warm spare, which has imported the Chorus library already.
const RESTART_WAIT_MS = 5_000
const isWarmSpare = (p: { cmd: string }) => p.cmd === 'chorus spare (warm)'

async function until<T>(check: () => Promise<T | null | undefined | false>, timeoutMs: number, what: string, output: () => string): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms; output:\n${output()}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

describe('chorus up supervises its processes', () => {
  let db: TestDatabase
  let dir = ''
  beforeAll(async () => {
    db = await testDatabase()
  })
  afterEach(async () => {
    if (!dir) return
    await killProcessesIn(dir)
    await rm(dir, { recursive: true, force: true })
    dir = ''
  })
  afterAll(async () => {
    await db?.drop()
  })

  it('starts a killed instance again from a warm spare, serving within 5 s, and a killed balancer too; one line each; Ctrl-C then leaves nothing', async () => {
    dir = await mkdtemp(join(tmpdir(), 'chorus-up-supervise-'))
    const base = await freeBase(2)
    const up = new Up(['--instances', '2', '--app', hello, '--port', String(base), '--no-dashboard'], dir, { CHORUS_LOG_LEVEL: 'info', DATABASE_URL: db.url })
    const output = () => up.output
    const first = await until(() => getJson<Hello>(`http://127.0.0.1:${base + 2}/`), 60_000, 'instance-2 serving', output)
    await until(() => getJson<Hello>(`http://127.0.0.1:${base}/`), 30_000, 'the balancer serving', output)

    const victim = (await processesIn(dir)).filter((p) => p.cmd.includes('runner.js') && p.cmd.includes(hello))
    expect(victim).toHaveLength(2)
    await until(async () => (await processesIn(dir)).some(isWarmSpare), 60_000, 'a warm spare (ps: chorus spare (warm))', output)
    const status = JSON.parse((await chorus(['status', '--json'], dir, { DATABASE_URL: db.url })).stdout) as { id: string; pid: number }[]
    const pid = status.find((m) => m.id === 'instance-2')!.pid
    const killedAt = Date.now()
    process.kill(pid, 'SIGKILL')
    const again = await until(async () => {
      const view = await getJson<Hello>(`http://127.0.0.1:${base + 2}/`)
      return view && view.epoch !== first.epoch ? view : null
    }, RESTART_WAIT_MS, 'instance-2 serving again', output)
    console.log(`instance-2 killed (SIGKILL) and serving again after ${Date.now() - killedAt} ms`)
    expect(again.instance).toBe('instance-2')
    expect(output().match(/chorus +│ .* WARN +instance-2 exited \(SIGKILL\); restarting it in [\d.]+ s$/gm)).toHaveLength(1)

    // The balancer is a child process too: killed, it is started again and serves.
    const balancer = (await processesIn(dir)).find((p) => / balancer --port /.test(p.cmd))!
    const mark = output().length
    process.kill(balancer.pid, 'SIGKILL')
    await up.waitFor(/balancer exited \(SIGKILL\); restarting it in/, 10_000, mark)
    const back = await up.waitFor(/balancer is back \(pid (\d+)\)/, 30_000, mark)
    await until(() => getJson<Hello>(`http://127.0.0.1:${base}/`), 30_000, 'the balancer serving again', output)
    expect(Number(back[1])).not.toBe(balancer.pid)
    expect((await processesIn(dir)).map((p) => p.pid)).toContain(Number(back[1]))

    // One format: the balancer's records are rendered like the instances', prefixed with its name.
    expect(output()).toMatch(/^balancer +│ \d\d:\d\d:\d\d\.\d{3} INFO +upstream added /m)
    expect(output()).not.toMatch(/│ \{"level"/)

    up.interrupt()
    expect(await up.exited, output()).toBe(0)
    expect(await processesIn(dir)).toEqual([])
  }, 180_000)

  it('leaves no orphan when chorus up itself is killed: what it ran (and its spare) ends by itself', async () => {
    dir = await mkdtemp(join(tmpdir(), 'chorus-up-orphan-'))
    const base = await freeBase(1)
    const up = new Up(['--instances', '1', '--app', hello, '--port', String(base), '--no-dashboard'], dir, { CHORUS_LOG_LEVEL: 'info', DATABASE_URL: db.url })
    await until(() => getJson<Hello>(`http://127.0.0.1:${base}/`), 60_000, 'the balancer serving instance-1', () => up.output)
    // chorus up, the instance, the balancer and the warm spare.
    await until(async () => (await processesIn(dir)).some(isWarmSpare), 60_000, 'a warm spare', () => up.output)
    const running = await processesIn(dir)
    expect(running.length, JSON.stringify(running)).toBe(4)
    process.kill(up.child.pid!, 'SIGKILL')
    await up.exited
    await until(async () => (await processesIn(dir)).length === 0, 40_000, 'the instance, the balancer and the spare gone', () => up.output)
  }, 120_000)

  it('gives up on an app that crashes at once, in one line, ends the run with 1 and leaves nothing (json log format)', async () => {
    dir = await mkdtemp(join(tmpdir(), 'chorus-up-crash-'))
    await writeFile(join(dir, 'crash.mjs'), "throw new Error('this app cannot start')\n")
    const base = await freeBase(1)
    const up = new Up(['--instances', '1', '--app', join(dir, 'crash.mjs'), '--port', String(base), '--no-balancer', '--no-dashboard', '--log-format', 'json'], dir, { DATABASE_URL: db.url })
    expect(await up.exited, up.output).toBe(1)
    const records = up.output.trim().split('\n').map((l) => JSON.parse(l) as { process: string; level: number; msg: string })
    expect(records.every((r) => typeof r.process === 'string' && typeof r.level === 'number')).toBe(true)
    const restarts = records.filter((r) => r.process === 'chorus' && /^instance-1 exited \(code 1\); restarting it in/.test(r.msg))
    expect(restarts).toHaveLength(4)
    const gaveUp = records.filter((r) => r.process === 'chorus' && r.level === 50)
    expect(gaveUp.map((r) => r.msg)).toEqual(['instance-1 exited (code 1) 5 times in a row right after starting; giving up on it'])
    expect(records.at(-1)).toMatchObject({ process: 'chorus', msg: 'stopped' })
    expect(await processesIn(dir)).toEqual([])
  }, 180_000)

  it('runs a directory by its package.json main', async () => {
    dir = await mkdtemp(join(tmpdir(), 'chorus-up-dir-'))
    const appDir = join(dir, 'app')
    await mkdir(join(appDir, 'lib'), { recursive: true })
    await writeFile(join(appDir, 'package.json'), JSON.stringify({ name: 'app', main: 'lib/main.mjs' }))
    await writeFile(join(appDir, 'lib/main.mjs'), `await import(${JSON.stringify(pathToFileURL(hello).href)})\n`)
    const base = await freeBase(1)
    const up = new Up(['--instances', '1', '--app', appDir, '--port', String(base), '--no-balancer', '--no-dashboard'], dir, { CHORUS_LOG_LEVEL: 'info', DATABASE_URL: db.url })
    const view = await until(() => getJson<Hello>(`http://127.0.0.1:${base + 1}/`), 60_000, 'instance-1 serving', () => up.output)
    expect(view.instance).toBe('instance-1')
    up.interrupt()
    expect(await up.exited, up.output).toBe(0)
  }, 120_000)

  it('refuses a directory with nothing to run in one line, exit 2, before starting anything', async () => {
    dir = await mkdtemp(join(tmpdir(), 'chorus-up-empty-'))
    await chmod(dir, 0o755)
    const empty = join(dir, 'nothing')
    await mkdir(empty)
    await writeFile(join(empty, 'package.json'), JSON.stringify({ name: 'nothing', scripts: { start: 'tsx serve.ts' } }))
    // The embedded default: refused before PostgreSQL is started.
    for (const app of [empty, join(root, 'examples/hello')]) {
      const run = await chorus(['up', '--app', app], dir)
      expect(run.stderr).toBe(`chorus: CHORUS_ERR_CLI_APP_NOT_RUNNABLE the app directory ${app} has nothing to run: no package.json "main", no "start" script running node, no index.js or index.mjs\n`)
      expect(run.stdout).toBe('')
      expect(run.code).toBe(2)
    }
    expect(await processesIn(dir)).toEqual([])
  }, 120_000)
})
