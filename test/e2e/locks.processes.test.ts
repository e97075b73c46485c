import { afterEach, beforeAll, afterAll, describe, expect, it } from 'vitest'
import { lockStatus } from '../../src/locks/status.js'
import { eventually } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { Proc, type Line } from '../helpers/proc.js'

const fixture = new URL('../fixtures/locker.mjs', import.meta.url).pathname

interface Held {
  token: string
  mode: 'exclusive' | 'shared'
  start: number
  end: number
  proc: string
}

describe('locks across real processes', () => {
  let db: TestDatabase
  let procs: Proc[] = []

  const start = async (ids: string[]): Promise<Proc[]> => {
    const env = { DATABASE_URL: db.url, CHORUS_SECRET: 'test-secret-0123456789', CHORUS_PRESET: 'local' }
    const started = ids.map((id) => new Proc(fixture, [], { ...env, CHORUS_INSTANCE_ID: id }))
    procs.push(...started)
    await Promise.all(started.map((p) => p.waitFor((l) => l.type === 'ready', 30_000, 'ready')))
    return started
  }
  const failed = (l: Line) => l.type === 'error' || l.type === 'start-failed'

  /** Runs the same loop command on every process and returns the merged history. */
  async function loops(ps: Proc[], cmd: Record<string, unknown>): Promise<Held[]> {
    for (const p of ps) p.send({ cmd: 'loop', ...cmd })
    const lines = await Promise.all(
      ps.map((p) => p.waitFor((l) => l.type === 'history' || failed(l), 50_000, 'the loop history')),
    )
    for (const l of lines) expect(l.type, JSON.stringify(l)).toBe('history')
    return lines.flatMap((l, i) => (l.history as Omit<Held, 'proc'>[]).map((h) => ({ ...h, proc: String(i) })))
  }

  beforeAll(async () => {
    db = await testDatabase()
  })
  afterEach(async () => {
    await Promise.all(procs.map((p) => p.stop()))
    procs = []
  })
  afterAll(async () => {
    await db.drop()
  })

  it('three processes × 300 exclusive acquisitions: no overlap, tokens strictly increase', async () => {
    const ps = await start(['x1', 'x2', 'x3'])
    const t0 = Date.now()
    const history = await loops(ps, { name: 'counter', count: 300, modes: ['exclusive'] })
    const ms = Date.now() - t0
    expect(history).toHaveLength(900)
    history.sort((x, y) => x.start - y.start)
    let handoffs = 0
    for (let i = 1; i < history.length; i++) {
      const prev = history[i - 1]!
      const cur = history[i]!
      expect(cur.start, `holding ${i} began before ${i - 1} ended`).toBeGreaterThanOrEqual(prev.end)
      expect(BigInt(cur.token) > BigInt(prev.token), `token ${cur.token} after ${prev.token}`).toBe(true)
      if (cur.proc !== prev.proc) handoffs++
    }
    console.log(`900 exclusive acquisitions over 3 processes in ${ms} ms (${handoffs} hand-offs between processes)`)
  })

  it('shared holders overlap each other but never an exclusive holder', async () => {
    const ps = await start(['s1', 's2', 's3'])
    const [p1, p2, p3] = ps as [Proc, Proc, Proc]
    // Deterministic overlap: three shared holders at once, while an exclusive request is refused.
    p1.send({ cmd: 'hold', name: 'rw', mode: 'shared' })
    await p1.waitFor((l) => l.type === 'held' && l.name === 'rw', 10_000, 'p1 shared')
    p2.send({ cmd: 'hold', name: 'rw', mode: 'shared' })
    p3.send({ cmd: 'hold', name: 'rw', mode: 'shared' })
    await p2.waitFor((l) => l.type === 'held' && l.name === 'rw', 10_000, 'p2 shared')
    await p3.waitFor((l) => l.type === 'held' && l.name === 'rw', 10_000, 'p3 shared')
    expect((await lockStatus(db.sql)).shared).toBe(3)
    p1.send({ cmd: 'try', name: 'rw-x', mode: 'exclusive' }) // another name: free
    p1.send({ cmd: 'release', name: 'rw' })
    p2.send({ cmd: 'release', name: 'rw' })
    p3.send({ cmd: 'release', name: 'rw' })
    await Promise.all(ps.map((p) => p.waitFor((l) => l.type === 'released' && l.name === 'rw', 10_000, 'released')))
    p1.send({ cmd: 'release', name: 'rw-x' })

    // Mixed load: each process takes the lock shared twice, then exclusive once, 40 rounds.
    const history = await loops(ps, { name: 'mixed', count: 120, modes: ['shared', 'shared', 'exclusive'], holdMs: 1 })
    expect(history).toHaveLength(360)
    const overlaps = (x: Held, y: Held) => x.start < y.end && y.start < x.end
    let sharedOverlaps = 0
    for (let i = 0; i < history.length; i++) {
      for (let j = 0; j < history.length; j++) {
        const x = history[i]!
        const y = history[j]!
        if (i === j) continue
        // Fencing: a holding that began after an exclusive one ended (or an exclusive one that began
        // after another ended) carries a larger token. Two shared holdings may overlap in the
        // database while their recorded windows do not, so their order says nothing.
        const exclusive = x.mode === 'exclusive' || y.mode === 'exclusive'
        if (exclusive && x.end <= y.start) expect(BigInt(y.token) > BigInt(x.token), `token ${y.token} after ${x.token}`).toBe(true)
        if (i > j || !overlaps(x, y)) continue
        expect(x.mode === 'exclusive' || y.mode === 'exclusive', `exclusive ${x.token} overlaps ${y.token}`).toBe(false)
        sharedOverlaps++
      }
    }
    console.log(`360 mixed acquisitions: ${sharedOverlaps} overlapping pairs of shared holders, none with an exclusive holder`)
  })

  it('kill -9 of the holder: a waiting process gets the lock within failAfter + 1 s, with a larger token', async () => {
    const failAfterMs = 2500 // the local preset
    const [holder, waiter] = (await start(['k1', 'k2'])) as [Proc, Proc]
    holder.send({ cmd: 'hold', name: 'victim', mode: 'exclusive' })
    const first = await holder.waitFor((l) => l.type === 'held' || failed(l), 10_000, 'the holder to hold')
    expect(first.type).toBe('held')
    waiter.send({ cmd: 'hold', name: 'victim', mode: 'exclusive' })
    await eventually(async () => (await lockStatus(db.sql)).waiters === 1, 'the second process to queue')
    const killedAt = performance.timeOrigin + performance.now()
    holder.kill('SIGKILL')
    const second = await waiter.waitFor((l) => l.type === 'held' || failed(l), failAfterMs + 10_000, 'the waiter to get the lock')
    expect(second.type).toBe('held')
    const tookMs = (second.at as number) - killedAt
    console.log(`kill -9 of the holder → lock granted to the waiting process after ${tookMs.toFixed(0)} ms (failAfter ${failAfterMs} ms)`)
    expect(tookMs).toBeLessThanOrEqual(failAfterMs + 1000)
    expect(BigInt(second.token as string) > BigInt(first.token as string)).toBe(true)
  })
})
