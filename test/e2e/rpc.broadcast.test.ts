import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Cluster } from '../../src/cluster.js'
import { isChorusError } from '../../src/errors.js'
import { eventually, member, record, secret } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { Proc } from '../helpers/proc.js'

const fixture = new URL('../fixtures/rpc-node.mjs', import.meta.url).pathname
const ids = ['n1', 'n2', 'n3']

describe('RPC broadcast across real processes', () => {
  let db: TestDatabase
  let caller: Cluster
  const procs = new Map<string, Proc>()

  beforeAll(async () => {
    db = await testDatabase()
    const env = { DATABASE_URL: db.url, CHORUS_SECRET: secret, CHORUS_PRESET: 'local' }
    for (const id of ids) procs.set(id, new Proc(fixture, [], { ...env, CHORUS_INSTANCE_ID: id }))
    await Promise.all([...procs.values()].map((p) => p.waitFor((l) => l.type === 'ready', 30_000, 'ready')))
    caller = await member(db.url, 'caller')
    caller.rpc.handle('whoami', (_p, ctx) => ({ id: 'caller', pid: process.pid, from: ctx.from }))
    caller.rpc.handle('sleep', () => 'awake')
    await eventually(() => ids.every((id) => caller.members.isLive(id)), 'the caller to see every node')
  })
  afterAll(async () => {
    for (const p of procs.values()) p.child.kill('SIGCONT')
    await Promise.all([...procs.values()].map((p) => p.stop()))
    await caller?.close()
    await db.drop()
  })

  it('gathers the result of every live member, this one included', async () => {
    const r = await caller.rpc.broadcast<{ id: string; from: string }>('whoami')
    expect(Object.keys(r.results).sort()).toEqual(['caller', 'n1', 'n2', 'n3'])
    for (const [id, v] of Object.entries(r.results)) expect(v).toMatchObject({ id, from: 'caller' })
    expect(r.missing).toEqual([])
    expect(r.errors).toEqual({})
  })

  it('reports a failing member among the errors and keeps the others’ results', async () => {
    const r = await caller.rpc.broadcast('fail', { on: ['n1'] }, { includeSelf: false })
    expect(r.results).toEqual({ n2: 'fine', n3: 'fine' })
    expect(r.errors.n1).toMatchObject({ code: 'CHORUS_ERR_RPC_HANDLER_FAILED' })
    expect(r.errors.n1!.message).toContain('n1 fails on purpose')
    expect(r.missing).toEqual([])
  })

  it('returns by the deadline when a member is slow, listing it as missing', async () => {
    const timeoutMs = 1500
    const t0 = performance.now()
    const r = await caller.rpc.broadcast('sleep', { on: ['n3'], ms: 60_000 }, { timeoutMs })
    const ms = performance.now() - t0
    expect(r.results).toEqual({ caller: 'awake', n1: 'awake', n2: 'awake' })
    expect(r.missing).toEqual(['n3'])
    expect(ms).toBeLessThan(timeoutMs + 750)
    console.log(`slow member: broadcast returned in ${ms.toFixed(0)} ms (timeout ${timeoutMs} ms)`)
  })

  it('returns by the deadline when a member’s process is stopped (SIGSTOP), listing it as missing', async () => {
    const n3 = procs.get('n3')!
    const timeoutMs = 1500
    n3.child.kill('SIGSTOP')
    try {
      const t0 = performance.now()
      const r = await caller.rpc.broadcast('whoami', null, { timeoutMs })
      const ms = performance.now() - t0
      expect(Object.keys(r.results).sort()).toEqual(['caller', 'n1', 'n2'])
      expect(r.missing).toEqual(['n3'])
      expect(ms).toBeLessThan(timeoutMs + 750)
      console.log(`stopped member: broadcast returned in ${ms.toFixed(0)} ms (timeout ${timeoutMs} ms)`)
    } finally {
      n3.child.kill('SIGCONT')
    }
  })

  it('with one member killed by kill -9, returns the others’ results plus the missing member within the timeout', async () => {
    const down = record(caller, 'member:down')
    const n2 = procs.get('n2')!
    n2.kill('SIGKILL')
    await n2.exited
    // Still a member in every view (failAfter has not passed): the broadcast must not wait for it.
    expect(caller.members.isLive('n2')).toBe(true)
    const timeoutMs = 3000
    const t0 = performance.now()
    const r = await caller.rpc.broadcast<{ id: string }>('whoami', null, { timeoutMs })
    const ms = performance.now() - t0
    expect(r.missing).toEqual(['n2'])
    expect(Object.keys(r.results).sort()).toEqual(['caller', 'n1', 'n3'])
    expect(r.errors).toEqual({})
    expect(ms).toBeLessThan(timeoutMs)
    console.log(`killed member: broadcast returned in ${ms.toFixed(0)} ms (timeout ${timeoutMs} ms)`)

    const direct = await caller.rpc.call('n2', 'whoami', null, { timeoutMs }).catch((e: unknown) => e)
    expect(isChorusError(direct, 'CHORUS_ERR_RPC_UNREACHABLE')).toBe(true)
    // Once membership declares it down, it is no longer called at all.
    await eventually(() => down.some((d) => d.member.instanceId === 'n2'), 'n2 to be declared down', 15_000)
    const after = await caller.rpc.broadcast('whoami', null, { timeoutMs })
    expect(after.missing).toEqual([])
    expect(Object.keys(after.results)).not.toContain('n2')
    expect(isChorusError(await caller.rpc.call('n2', 'whoami').catch((e: unknown) => e), 'CHORUS_ERR_RPC_UNKNOWN_MEMBER')).toBe(true)
  })
})
