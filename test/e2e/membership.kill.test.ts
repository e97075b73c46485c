import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { Proc } from '../helpers/proc.js'

const fixture = new URL('../fixtures/member.mjs', import.meta.url).pathname

describe('membership across real processes', () => {
  let db: TestDatabase
  const procs: Proc[] = []
  beforeAll(async () => {
    db = await testDatabase()
  })
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()))
    await db.drop()
  })

  it('sees a kill -9 instance down within failAfter, with default settings', async () => {
    const env = { DATABASE_URL: db.url, CHORUS_SECRET: 'test-secret-0123456789', CHORUS_PRESET: 'local' }
    for (const id of ['a', 'b', 'c']) procs.push(new Proc(fixture, [], { ...env, CHORUS_INSTANCE_ID: id }))
    await Promise.all(procs.map((p) => p.waitFor((l) => l.type === 'ready', 30_000, 'ready')))
    for (const p of procs) {
      for (const id of ['a', 'b', 'c']) await p.waitFor((l) => l.type === 'member:up' && l.id === id, 10_000, `member:up ${id}`)
    }
    const [a, b, c] = procs as [Proc, Proc, Proc]
    const killedAt = Date.now()
    c.kill('SIGKILL')
    const seen = await Promise.all([a, b].map((p) => p.waitFor((l) => l.type === 'member:down' && l.id === 'c', 15_000, 'member:down c')))
    const times = seen.map((l) => (l.at as number) - killedAt)
    const failAfterMs = 2500
    console.log(`kill -9 → member:down seen after ${times.join(' ms, ')} ms (failAfter ${failAfterMs} ms)`)
    expect(seen.every((l) => l.reason === 'expired')).toBe(true)
    // Detection is the lease expiry (≤ failAfter after the kill) plus one scheduling slice, never a TCP timeout.
    for (const t of times) expect(t).toBeLessThanOrEqual(failAfterMs + 500)
  })
})
