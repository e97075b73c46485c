import { createHash } from 'node:crypto'
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

describe('the bus between real processes', () => {
  let db: TestDatabase
  let receiver: Proc
  let pubA: Proc
  let pubB: Proc
  const publisherOf = new Map<Proc, string>()

  beforeAll(async () => {
    db = await testDatabase()
    const env = { DATABASE_URL: db.url, CHORUS_SECRET: 'test-secret-0123456789', CHORUS_PRESET: 'local' }
    receiver = new Proc(fixture, [], { ...env, CHORUS_INSTANCE_ID: 'receiver', FIXTURE_PRINT_BUS: '1' })
    pubA = new Proc(fixture, [], { ...env, CHORUS_INSTANCE_ID: 'pub-a' })
    pubB = new Proc(fixture, [], { ...env, CHORUS_INSTANCE_ID: 'pub-b' })
    for (const p of [receiver, pubA, pubB]) {
      const ready = await readyOf(p)
      expect(ready.type).toBe('ready')
      publisherOf.set(p, ready.publisher as string)
    }
    // The receiver is listening (it was ready) and knows both publishers.
    for (const id of ['pub-a', 'pub-b']) await receiver.waitFor((l) => l.type === 'member:up' && l.id === id, 10_000, `member:up ${id}`)
  })

  afterAll(async () => {
    await Promise.all([receiver, pubA, pubB].filter(Boolean).map((p) => p.stop()))
    await db.drop()
  })

  const received = (from: Proc): Line[] => receiver.lines.filter((l) => l.type === 'bus' && l.publisher === publisherOf.get(from))

  async function until(check: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }

  it('delivers each publisher’s messages complete and in order while two processes publish at once', async () => {
    const n = 1000
    pubA.send({ cmd: 'publish', count: n, prefix: 'A', tag: 'order' })
    pubB.send({ cmd: 'publish', count: n, prefix: 'B', tag: 'order' })
    for (const p of [pubA, pubB]) {
      const done = await p.waitFor((l) => l.type === 'published' && l.tag === 'order', 30_000, 'published')
      expect(done.failed).toBe(0)
    }
    await until(() => received(pubA).length >= n && received(pubB).length >= n, `${n} messages from each publisher`)
    expect(received(pubA).map((l) => l.data)).toEqual(Array.from({ length: n }, (_, i) => `A${i}`))
    expect(received(pubB).map((l) => l.data)).toEqual(Array.from({ length: n }, (_, i) => `B${i}`))
    const seqs = received(pubA).map((l) => l.seq as number)
    expect(seqs).toEqual(seqs.map((_, i) => seqs[0]! + i))
    expect(receiver.lines.filter((l) => l.type === 'bus:gap')).toEqual([])
  })

  it('delivers a 100 KB payload intact', async () => {
    let text = ''
    for (let i = 0; text.length < 100 * 1024; i++) text += `${i}:é€😀|`
    const sha256 = createHash('sha256').update(text).digest('hex')
    pubB.send({ cmd: 'publish', text, tag: 'big' })
    expect((await pubB.waitFor((l) => l.type === 'published' && l.tag === 'big', 30_000, 'published big')).failed).toBe(0)
    await until(() => received(pubB).some((l) => typeof l.data === 'object'), 'the 100 KB message')
    const big = received(pubB).find((l) => typeof l.data === 'object')!
    expect(big.data).toMatchObject({ length: text.length, sha256 })
    const [row] = await db.sql<{ bytes: number }[]>`select max(octet_length(data))::int as bytes from bus_payloads`
    expect(row!.bytes).toBe(Buffer.byteLength(text))
  })

  it('re-listens after pg_terminate_backend of the receiver’s LISTEN connection, reports bus:gap, and delivers again', async () => {
    const [listener] = await db.sql<{ pid: number }[]>`
      select pid from pg_stat_activity where datname = current_database() and application_name = 'chorus:listen:receiver'`
    expect(listener).toBeDefined()
    await db.sql`select pg_terminate_backend(${listener!.pid})`
    await receiver.waitFor((l) => l.type === 'bus:gap' && l.reason === 'reconnect', 15_000, 'bus:gap reconnect')
    const before = received(pubA).length
    pubA.send({ cmd: 'publish', count: 10, prefix: 'after-', tag: 'after' })
    await until(() => received(pubA).length >= before + 10, 'messages after the reconnect')
    expect(received(pubA).slice(before).map((l) => l.data)).toEqual(Array.from({ length: 10 }, (_, i) => `after-${i}`))
    const [again] = await db.sql<{ pid: number }[]>`
      select pid from pg_stat_activity where datname = current_database() and application_name = 'chorus:listen:receiver'`
    expect(again!.pid).not.toBe(listener!.pid)
  })
})
