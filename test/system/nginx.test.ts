import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { Proc } from '../helpers/proc.js'

const run = promisify(execFile)
const root = new URL('../..', import.meta.url).pathname
const bin = join(root, 'bin/chorus.js')
const fixture = join(root, 'test/fixtures/realtime-node.mjs')

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })

describe('chorus nginx with a real nginx', () => {
  let db: TestDatabase
  let dir = ''
  let nginx: ChildProcess | null = null
  let watcher: ChildProcess | null = null
  const procs = new Map<string, Proc>()

  beforeAll(async () => {
    db = await testDatabase()
    dir = await mkdtemp(join(tmpdir(), 'chorus-nginx-'))
    await chmod(dir, 0o755)
    for (const id of ['a', 'b', 'c']) {
      const p = new Proc(fixture, [], { DATABASE_URL: db.url, CHORUS_SECRET: 'nginx-system-secret-0123456789', CHORUS_PRESET: 'local', CHORUS_INSTANCE_ID: id })
      procs.set(id, p)
    }
    await Promise.all([...procs.values()].map((p) => p.waitFor((l) => l.type === 'ready', 30_000, 'ready')))
  })

  afterAll(async () => {
    watcher?.kill('SIGTERM')
    nginx?.kill('SIGQUIT')
    await Promise.all([...procs.values()].map((p) => p.stop()))
    await db?.drop()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  it('renders a config that passes nginx -t, serves all three instances, and follows a member death with --watch', async () => {
    const port = await freePort()
    const conf = join(dir, 'nginx.conf')
    const env = { ...process.env, DATABASE_URL: db.url }
    const args = [bin, 'nginx', '--out', conf, '--listen', `127.0.0.1:${port}`, '--run-dir', dir]
    await run(process.execPath, args, { env })
    const text = await readFile(conf, 'utf8')
    expect(text.match(/^\s+server 127\.0\.0\.1:\d+ /gm)).toHaveLength(3)
    const check = await run('nginx', ['-t', '-c', conf, '-p', dir]).catch((e: { stderr: string }) => e)
    expect((check as { stderr: string }).stderr).toMatch(/syntax is ok[\s\S]*test is successful/)

    nginx = spawn('nginx', ['-c', conf, '-p', dir, '-g', 'daemon off;'], { stdio: 'ignore' })
    const url = `http://127.0.0.1:${port}/`
    const seen = new Set<string>()
    for (let i = 0; i < 60 && seen.size < 3; i++) {
      try {
        seen.add(await (await fetch(url)).text())
      } catch {
        await new Promise((r) => setTimeout(r, 100))
      }
    }
    expect([...seen].sort()).toEqual(['a', 'b', 'c'])

    watcher = spawn(process.execPath, [...args, '--watch', '--reload', `nginx -s reload -c ${conf} -p ${dir}`], { env, stdio: 'ignore' })
    await new Promise((r) => setTimeout(r, 1000))
    procs.get('c')!.kill('SIGKILL')
    procs.delete('c')
    let rewritten = ''
    for (let i = 0; i < 100; i++) {
      rewritten = await readFile(conf, 'utf8')
      if ((rewritten.match(/^\s+server 127\.0\.0\.1:\d+ /gm) ?? []).length === 2) break
      await new Promise((r) => setTimeout(r, 100))
    }
    expect(rewritten).not.toMatch(/# c$/m)
    expect(rewritten.match(/^\s+server 127\.0\.0\.1:\d+ /gm)).toHaveLength(2)
    await new Promise((r) => setTimeout(r, 1000)) // let the reload take effect
    const after = new Set<string>()
    for (let i = 0; i < 20; i++) {
      const res = await fetch(url)
      expect(res.status).toBe(200)
      after.add(await res.text())
    }
    expect([...after].sort()).toEqual(['a', 'b'])
  })
})
