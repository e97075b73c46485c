import { readdir } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { Proc, type Line } from '../helpers/proc.js'

const fixture = new URL('../fixtures/member.mjs', import.meta.url).pathname

/** The process's `ready` or `start-failed` line; fails at once if it exits before printing either. */
function readyOf(p: Proc, timeoutMs = 30_000): Promise<Line> {
  return Promise.race([
    p.waitFor((l) => l.type === 'ready' || l.type === 'start-failed', timeoutMs, 'ready'),
    p.exited.then(async ({ code, signal }) => {
      await new Promise((r) => setTimeout(r, 100)) // let the last output lines arrive
      throw new Error(`the process exited (${code ?? signal}) before it was ready; output:\n${[...p.lines.map((l) => JSON.stringify(l)), ...p.stderr].slice(-15).join('\n')}`)
    }),
  ])
}

describe('migrations across real processes', () => {
  let db: TestDatabase
  const procs: Proc[] = []
  const ids = Array.from({ length: 10 }, (_, i) => `m${i}`)

  beforeAll(async () => {
    db = await testDatabase({ empty: true })
  })
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()))
    await db.drop()
  })

  it('ten instances started at the same moment on an empty database migrate exactly once, and all start', async () => {
    const env = { DATABASE_URL: db.url, CHORUS_SECRET: 'test-secret-0123456789', CHORUS_PRESET: 'local' }
    for (const id of ids) procs.push(new Proc(fixture, [], { ...env, CHORUS_INSTANCE_ID: id }))
    const outcomes = await Promise.all(procs.map((p) => readyOf(p, 50_000)))
    expect(outcomes.filter((l) => l.type !== 'ready')).toEqual([])

    // The migrations the processes ran: the built package's.
    const files = (await readdir(new URL('../../dist/db/migrations', import.meta.url))).filter((f) => /^\d{3}_.*\.sql$/.test(f)).sort()
    const known = files.map((f) => ({ version: Number(f.slice(0, 3)), name: f.slice(4, -4) }))
    expect(known.length).toBeGreaterThanOrEqual(2)
    const rows = await db.sql<{ version: number; name: string; applied_by: string }[]>`
      select version, name, applied_by from chorus.migrations order by version`
    // Every migration recorded exactly once (version is the primary key, so a second apply would
    // have failed a start), and all by the same single instance.
    expect(rows.map((r) => [r.version, r.name])).toEqual(known.map((m) => [m.version, m.name]))
    const appliers = new Set(rows.map((r) => r.applied_by))
    expect(appliers.size).toBe(1)
    expect(ids).toContain([...appliers][0])
    console.log(`migrated once, by ${[...appliers][0]}, while ${ids.length} instances started together`)

    // And the ten form one cluster on the migrated schema.
    const [live] = await db.sql<{ n: number }[]>`select count(*)::int as n from chorus.members where status = 'up'`
    expect(live!.n).toBe(ids.length)
  })
})
