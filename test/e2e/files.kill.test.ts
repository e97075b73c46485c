import { existsSync, readdirSync, statSync } from 'node:fs'
import { mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Cluster } from '../../src/cluster.js'
import { eventually, member, record } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { Proc } from '../helpers/proc.js'

const fixture = new URL('../fixtures/files-worker.mjs', import.meta.url).pathname

describe('a writer killed with kill -9 in the middle of a write', () => {
  let db: TestDatabase
  let root: string
  let survivor: Cluster
  const procs: Proc[] = []
  const others: Cluster[] = []

  beforeAll(async () => {
    db = await testDatabase()
    root = await mkdtemp(join(tmpdir(), 'chorus-files-kill-'))
    survivor = await member(db.url, 'survivor', { files: { root } })
  })
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()))
    await Promise.all([survivor?.close(), ...others.map((c) => c.close())])
    await db.drop()
    await rm(root, { recursive: true, force: true })
  })

  it('leaves no partial file visible, and its temporary file is swept once the writer is seen down', async () => {
    const swept = record(survivor, 'files:temp:swept')
    const down = record(survivor, 'member:down')
    const env = { DATABASE_URL: db.url, CHORUS_SECRET: 'integration-test-secret-0123', CHORUS_PRESET: 'local', CHORUS_FILES_ROOT: root }
    const writer = new Proc(fixture, [], { ...env, CHORUS_INSTANCE_ID: 'writer-1' })
    procs.push(writer)
    const ready = await writer.waitFor((l) => l.type === 'ready', 30_000, 'ready')
    // A large, slow stream: 64 KiB every 20 ms, 100 MiB in all — it never finishes on its own.
    writer.send({ cmd: 'slow-write', path: 'uploads/2024/big.bin', chunks: 1600, chunkBytes: 64 * 1024, delayMs: 20 })
    await writer.waitFor((l) => l.type === 'writing', 10_000, 'the write to start')
    const dir = join(root, 'uploads', '2024')
    const temp = await eventually(() => {
      const t = existsSync(dir) ? readdirSync(dir).find((n) => n.startsWith('.chorus-tmp.')) : undefined
      return t && statSync(join(dir, t)).size >= 256 * 1024 ? t : undefined
    }, 'the temporary file to grow')
    expect(temp).toContain(`.${ready.epoch as number}.`)
    expect(temp.endsWith('.writer-1')).toBe(true)

    writer.kill('SIGKILL')
    await writer.exited
    const partial = statSync(join(dir, temp)).size
    // Nothing under the target's name, through the API or on disk; the directory lists empty.
    expect(existsSync(join(dir, 'big.bin'))).toBe(false)
    expect(await survivor.files.stat('uploads/2024/big.bin')).toBeNull()
    expect(await survivor.files.list('uploads/2024')).toEqual([])
    expect(await survivor.files.read('uploads/2024/big.bin').catch((e: { code: string }) => e.code)).toBe('CHORUS_ERR_FILES_NOT_FOUND')

    // Seen down within failAfter; the sweep that follows removes the dead writer's temporary file.
    await eventually(() => down.find((d) => d.member.instanceId === 'writer-1'), 'writer-1 to be seen down', 15_000)
    // Waits for the sweep's own report: the file can vanish from disk a moment before the sweeper
    // hears its removal completed and says so.
    await eventually(() => swept.find((s) => s.path === `uploads/2024/${temp}`), 'the temporary file to be swept', 15_000)
    expect(swept).toContainEqual(expect.objectContaining({ path: `uploads/2024/${temp}`, instanceId: 'writer-1', reason: 'writer-down' }))
    expect(existsSync(join(dir, temp))).toBe(false)
    // Its path lock went with it: the same path can be written at once.
    const r = await survivor.files.write('uploads/2024/big.bin', 'whole', { waitMs: 10_000 })
    expect(r.size).toBe(5)
    console.log(`killed mid-write with ${partial} bytes in ${temp}; swept after member:down`)
  })

  it('sweeps temporary files of unknown writers past the grace period, of any writer past tempMaxAgeMs, and keeps live ones', async () => {
    const dir = join(root, 'sweep')
    await mkdir(join(dir, 'deep'), { recursive: true })
    const hourAgo = new Date(Date.now() - 60 * 60 * 1000)
    const self = survivor.members.self
    const entries = {
      oldGhost: join(dir, '.chorus-tmp.1.aaaaaaaaaaaa.ghost-1'),
      freshGhost: join(dir, '.chorus-tmp.1.bbbbbbbbbbbb.ghost-2'),
      ownLive: join(dir, 'deep', `.chorus-tmp.${self.epoch}.cccccccccccc.survivor`),
      ownPrevious: join(dir, 'deep', `.chorus-tmp.${self.epoch - 1}.dddddddddddd.survivor`),
      oldTomb: join(dir, '.chorus-tmp.3.eeeeeeeeeeee.ghost-3'),
      ancientLive: join(dir, `.chorus-tmp.${self.epoch}.ffffffffffff.survivor`),
    }
    await writeFile(entries.oldGhost, 'x')
    await writeFile(entries.freshGhost, 'x')
    await writeFile(entries.ownLive, 'x')
    await writeFile(entries.ownPrevious, 'x')
    await mkdir(join(entries.oldTomb, 'inner'), { recursive: true })
    await writeFile(join(entries.oldTomb, 'inner', 'f'), 'x')
    await writeFile(entries.ancientLive, 'x')
    await utimes(entries.oldGhost, hourAgo, hourAgo)
    await utimes(entries.oldTomb, hourAgo, hourAgo)
    const weekAgo = new Date(Date.now() - 7 * 24 * 60 * 60 * 1000)
    await utimes(entries.ancientLive, weekAgo, weekAgo)

    // A new instance sweeps at start (one sweeper at a time, so wait for it, then sweep again here).
    const late = await member(db.url, 'late', { files: { root } })
    others.push(late)
    await eventually(() => !existsSync(entries.oldGhost), 'the start sweep of a new instance', 15_000)
    await eventually(async () => (await survivor.files.sweep()) !== null, 'a sweep of its own', 15_000)

    expect(existsSync(entries.oldGhost)).toBe(false) // writer unknown, older than the grace period
    expect(existsSync(entries.oldTomb)).toBe(false) // a removed directory's remains, whole tree
    expect(existsSync(entries.ownPrevious)).toBe(false) // this instance, an epoch that ended
    expect(existsSync(entries.ancientLive)).toBe(false) // live writer, untouched past tempMaxAgeMs
    expect(existsSync(entries.freshGhost)).toBe(true) // could be a writer that just joined
    expect(existsSync(entries.ownLive)).toBe(true) // a write in progress here
  })
})
