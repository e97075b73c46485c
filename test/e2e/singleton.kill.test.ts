import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { Proc, type Line } from '../helpers/proc.js'

const fixture = new URL('../fixtures/worker.mjs', import.meta.url).pathname
const failAfterMs = 2500

describe('singletons across real processes', () => {
  let db: TestDatabase
  const procs: Proc[] = []
  beforeAll(async () => {
    db = await testDatabase()
  })
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()))
    await db.drop()
  })

  it('fails over on kill -9 and on graceful close, never running two starts at once', async () => {
    const env = { DATABASE_URL: db.url, CHORUS_SECRET: 'test-secret-0123456789', CHORUS_PRESET: 'local', FIXTURE_MODE: 'singleton' }
    const ids = ['s1', 's2', 's3']
    for (const id of ids) procs.push(new Proc(fixture, [], { ...env, CHORUS_INSTANCE_ID: id }))
    await Promise.all(procs.map((p) => p.waitFor((l) => l.type === 'ready', 30_000, 'ready')))
    const starts = () => procs.flatMap((p) => p.lines.filter((l) => l.type === 'singleton-start'))
    const waitStarts = async (n: number, what: string) => {
      const until = Date.now() + 20_000
      while (starts().length < n) {
        if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
        await new Promise((r) => setTimeout(r, 10))
      }
      return starts().sort((a, b) => a.at - b.at)
    }

    const [first] = await waitStarts(1, 'the first start')
    await new Promise((r) => setTimeout(r, 500))
    expect(starts()).toHaveLength(1)

    // kill -9 the holder: its interval ends at the kill.
    const killed = first!.id as string
    const killedAt = Date.now()
    procs[ids.indexOf(killed)]!.kill('SIGKILL')
    const second = (await waitStarts(2, 'a takeover after kill -9'))[1]!
    const takeoverAfterKill = second.at - killedAt

    // Graceful close of the new holder: it stops first, then the last one starts.
    const closer = procs[ids.indexOf(second.id as string)]!
    const closedAt = Date.now()
    closer.send({ cmd: 'close' })
    const third = (await waitStarts(3, 'a takeover after close'))[2]!
    const takeoverAfterClose = third.at - closedAt
    await closer.waitFor((l) => l.type === 'closed', 20_000, 'closed')

    // Intervals: [start, stop] per holder, the killed one ending at the kill.
    const stopOf = (id: string): number | null => {
      if (id === killed) return killedAt
      const stop = procs[ids.indexOf(id)]!.lines.find((l: Line) => l.type === 'singleton-stop')
      return stop ? (stop.at as number) : null
    }
    const intervals = [first!, second, third].map((s) => ({ id: s.id as string, start: s.at as number, stop: stopOf(s.id as string) }))
    expect(new Set(intervals.map((i) => i.id)).size).toBe(3)
    for (let i = 1; i < intervals.length; i++) {
      expect(intervals[i - 1]!.stop).not.toBeNull()
      expect(intervals[i]!.start).toBeGreaterThanOrEqual(intervals[i - 1]!.stop!)
    }
    expect(intervals[2]!.stop).toBeNull()
    console.log(
      `singleton: kill -9 of ${killed} → ${second.id} started after ${takeoverAfterKill} ms (failAfter ${failAfterMs} ms); ` +
        `graceful close of ${second.id} → ${third.id} started after ${takeoverAfterClose} ms; intervals ${JSON.stringify(intervals.map((i) => [i.id, i.start - intervals[0]!.start, i.stop === null ? null : i.stop - intervals[0]!.start]))}`,
    )
    expect(takeoverAfterKill).toBeLessThan(failAfterMs + 5000)
  })
})
