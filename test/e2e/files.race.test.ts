import { readdirSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { Proc, type Line } from '../helpers/proc.js'

const fixture = new URL('../fixtures/files-worker.mjs', import.meta.url).pathname
const ROUNDS = 1000

interface WriteOp {
  i: number
  name: string
  token: string
}
interface RemoveOp {
  j: number
  token: string
  names: string[]
}

/** Every entry below `dir` whose name is reserved for temporary files. */
function temporaries(dir: string): string[] {
  const out: string[] = []
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.name.startsWith('.chorus-')) out.push(join(d, e.name))
      else if (e.isDirectory()) walk(join(d, e.name))
    }
  }
  walk(dir)
  return out
}

describe('the seed scenario: one process writes a/b/<file>, another removes a/b, over and over', () => {
  let db: TestDatabase
  let root: string
  const procs: Proc[] = []

  beforeAll(async () => {
    db = await testDatabase()
    root = await mkdtemp(join(tmpdir(), 'chorus-files-race-'))
  })
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()))
    await db.drop()
    await rm(root, { recursive: true, force: true })
  })

  it(`keeps the tree consistent at every observation over ${ROUNDS} rounds, and every write ends up present or removed by a later delete`, async () => {
    const env = { DATABASE_URL: db.url, CHORUS_SECRET: 'test-secret-0123456789', CHORUS_PRESET: 'local', CHORUS_FILES_ROOT: root }
    const [writer, remover, observer] = ['writer', 'remover', 'observer'].map((id) => new Proc(fixture, [], { ...env, CHORUS_INSTANCE_ID: id })) as [Proc, Proc, Proc]
    procs.push(writer, remover, observer)
    await Promise.all(procs.map((p) => p.waitFor((l) => l.type === 'ready', 30_000, 'ready')))
    const failed = (l: Line) => l.type === 'error' || l.type === 'start-failed'

    const t0 = Date.now()
    observer.send({ cmd: 'observe', dir: 'a/b' })
    writer.send({ cmd: 'write-loop', dir: 'a/b', count: ROUNDS })
    remover.send({ cmd: 'remove-loop', dir: 'a/b', count: ROUNDS })
    const [w, r] = await Promise.all([
      writer.waitFor((l) => l.type === 'writes' || failed(l), 110_000, 'the writes'),
      remover.waitFor((l) => l.type === 'removes' || failed(l), 110_000, 'the removes'),
    ])
    observer.send({ cmd: 'stop' })
    const o = await observer.waitFor((l) => l.type === 'observed' || failed(l), 20_000, 'the observations')
    const ms = Date.now() - t0
    expect(w.type, JSON.stringify(w)).toBe('writes')
    expect(r.type, JSON.stringify(r)).toBe('removes')
    expect(o.type, JSON.stringify(o)).toBe('observed')

    // No write failed: a concurrent delete never pulled a directory from under a writer.
    expect(w.errors).toEqual([])
    const writes = w.ops as WriteOp[]
    expect(writes).toHaveLength(ROUNDS)
    // Inside the remover's exclusive lock and the observer's shared lock: whole files only, no
    // temporary file (no write in progress); outside any lock: whole files only.
    expect(r.violations).toEqual([])
    expect(o.violations).toEqual([])
    const removes = r.ops as RemoveOp[]
    expect(removes).toHaveLength(ROUNDS)

    // Every write is either in the final tree or was seen — whole — by exactly one later delete.
    let finalNames: string[] = []
    try {
      finalNames = readdirSync(join(root, 'a', 'b'))
    } catch (err) {
      if ((err as { code?: string }).code !== 'ENOENT') throw err
    }
    expect(temporaries(root)).toEqual([])
    const removedBy = new Map<string, number>()
    for (const op of removes) {
      for (const n of op.names) {
        expect(removedBy.has(n), `${n} removed twice`).toBe(false)
        removedBy.set(n, op.j)
      }
    }
    const written = new Set(writes.map((x) => x.name))
    for (const n of [...removedBy.keys(), ...finalNames]) expect(written.has(n), `${n} was never written`).toBe(true)
    for (const x of writes) {
      const present = finalNames.includes(x.name)
      const removed = removedBy.has(x.name)
      expect(present !== removed, `write ${x.i} (${x.name}) present=${present} removed=${removed}`).toBe(true)
    }
    // Removes are serialized by their lock: their fencing tokens on a/b strictly increase.
    for (let k = 1; k < removes.length; k++) expect(BigInt(removes[k]!.token) > BigInt(removes[k - 1]!.token)).toBe(true)

    const interleaved = removes.filter((x) => x.names.length > 0).length
    expect(interleaved).toBeGreaterThan(0)
    console.log(
      `${ROUNDS} writes + ${ROUNDS} recursive removes in ${ms} ms; ${interleaved} removes found files (${removedBy.size} files removed, ` +
        `${finalNames.length} left); observer: ${o.locked} locked + ${o.unlocked} unlocked walks, ${o.files} files checked`,
    )
  }, 120_000) // about 25-40 s; room for a machine shared with other test runs
})
