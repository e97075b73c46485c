import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { Proc } from '../helpers/proc.js'

const fixture = new URL('../fixtures/signals-app.mjs', import.meta.url).pathname

describe('handleSignals', () => {
  let db: TestDatabase
  let env: Record<string, string>
  beforeAll(async () => {
    db = await testDatabase()
    env = { DATABASE_URL: db.url, CHORUS_SECRET: 'signals-test-secret-0123456789', CHORUS_PRESET: 'local' }
  })
  afterAll(async () => {
    await db?.drop()
  })

  const start = async (id: string, extra: Record<string, string> = {}) => {
    const proc = new Proc(fixture, [], { ...env, CHORUS_INSTANCE_ID: id, ...extra })
    await proc.waitFor((l) => l.type === 'ready', 60_000, 'the member')
    return proc
  }

  it('drains, stops the application, leaves the cluster and exits 0 on SIGTERM', async () => {
    const proc = await start('sig-term')
    proc.kill('SIGTERM')
    expect(await proc.exited).toEqual({ code: 0, signal: null })
    expect((await proc.waitFor((l) => l.type === 'stopping')).state).toBe('draining')
    const [live] = await db.sql<{ n: number }[]>`select count(*)::int as n from live_members where instance_id = 'sig-term'`
    expect(live!.n).toBe(0)
  })

  it('does the same on SIGINT', async () => {
    const proc = await start('sig-int')
    proc.kill('SIGINT')
    expect(await proc.exited).toEqual({ code: 0, signal: null })
  })

  it('exits 1 when the shutdown does not finish within timeoutMs', async () => {
    const proc = await start('sig-deadline', { SIGNALS_HANG: '1', SIGNALS_TIMEOUT_MS: '500' })
    proc.kill('SIGTERM')
    expect(await proc.exited).toEqual({ code: 1, signal: null })
  })

  it('exits at once on a second signal', async () => {
    const proc = await start('sig-twice', { SIGNALS_HANG: '1', SIGNALS_TIMEOUT_MS: '600000' })
    proc.kill('SIGTERM')
    await proc.waitFor((l) => l.type === 'stopping', 30_000, 'the shutdown to begin')
    proc.kill('SIGINT')
    expect(await proc.exited).toEqual({ code: 130, signal: null })
  })
})
