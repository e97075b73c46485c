import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { Proc } from '../helpers/proc.js'

const fixture = new URL('../fixtures/adopt-require.cjs', import.meta.url).pathname

describe('a CommonJS application', () => {
  let db: TestDatabase
  beforeAll(async () => {
    db = await testDatabase()
  })
  afterAll(async () => {
    await db?.drop()
  })

  it("loads Chorus with require('chorus'), and chorus/express and chorus/fastify, and runs a cluster member", async () => {
    const proc = new Proc(fixture, [], { DATABASE_URL: db.url, CHORUS_PRESET: 'local', CHORUS_INSTANCE_ID: 'cjs-1' })
    const line = await proc.waitFor((l) => l.type === 'ready' || l.type === 'error', 60_000, 'the CommonJS app')
    expect(line).toMatchObject({ type: 'ready', state: 'up', counter: 1, closed: 'stopped' })
    expect(line.exports).toEqual(expect.arrayContaining(['createCluster', 'ChorusError', 'isChorusError']))
    expect(line.integrations).toEqual(['function', 'function', 'function', 'function'])
    expect((await proc.exited).code).toBe(0)
  })
})
