import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Cluster } from '../../src/index.js'
import { jobStatus } from '../../src/jobs/status.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { eventually, member } from '../helpers/cluster.js'

interface Interval {
  on: string
  start: number
  stop: number | null
}

/** Registers the singleton on `c`, recording when its start ran and when its signal aborted. */
function watch(c: Cluster, name: string, log: Interval[], roles?: string[]) {
  return c.singleton(name, {
    roles,
    start(signal) {
      const i: Interval = { on: c.instanceId, start: performance.now(), stop: null }
      log.push(i)
      signal.addEventListener('abort', () => (i.stop = performance.now()), { once: true })
    },
  })
}

function expectNoOverlap(log: Interval[]): void {
  const sorted = [...log].sort((x, y) => x.start - y.start)
  for (let i = 1; i < sorted.length; i++) {
    expect(sorted[i - 1]!.stop, `interval ${i - 1} stopped`).not.toBeNull()
    expect(sorted[i]!.start).toBeGreaterThanOrEqual(sorted[i - 1]!.stop!)
  }
}

describe('singletons', () => {
  let db: TestDatabase
  const members: Cluster[] = []
  beforeAll(async () => {
    db = await testDatabase()
    for (const [id, roles] of [['a', []], ['b', ['ops']], ['c', []]] as const) members.push(await member(db.url, id, { roles: [...roles] }))
  })
  afterAll(async () => {
    for (const m of members) await m.close()
    await db?.drop()
  })

  it('runs only on an instance with one of its roles', async () => {
    const log: Interval[] = []
    for (const c of members) watch(c, 'ops-only', log, ['ops'])
    await eventually(() => log.length === 1, 'one start')
    expect(log[0]!.on).toBe('b')
  })

  it('starts on exactly one instance and moves to another when the holder closes', async () => {
    const log: Interval[] = []
    for (const c of members) watch(c, 'reporter', log)
    await eventually(() => log.length === 1, 'one start')
    await new Promise((r) => setTimeout(r, 300))
    expect(log).toHaveLength(1)
    const holder = members.find((m) => m.instanceId === log[0]!.on)!
    await holder.close()
    members.splice(members.indexOf(holder), 1)
    await eventually(() => log.length === 2, 'a takeover')
    expect(log[1]!.on).not.toBe(holder.instanceId)
    expectNoOverlap(log)
    const s = (await jobStatus(db.sql as never)).singletons.find((x) => x.name === 'reporter')!
    expect(s).toMatchObject({ holder: log[1]!.on, live: true })
    expect(s.fence).toBeGreaterThanOrEqual(2)
  })

  it('releases a singleton whose start throws, so it starts again', async () => {
    let calls = 0
    const started: string[] = []
    for (const c of members) {
      c.singleton('fragile', {
        start() {
          calls++
          started.push(c.instanceId)
          if (calls === 1) throw new Error('first start fails')
        },
      })
    }
    await eventually(() => started.length === 2, 'a second start', 10_000)
  })

  it('rejects bad input with typed errors', () => {
    const [c] = members
    expect(() => c!.singleton('', { start() {} })).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_SINGLETON_NAME_INVALID' }))
    expect(() => c!.singleton('x', {} as never)).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_SINGLETON_OPTIONS_INVALID' }))
    expect(() => c!.singleton('reporter', { start() {} })).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_SINGLETON_DUPLICATE' }))
  })
})
