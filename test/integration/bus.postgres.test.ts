import postgres from 'postgres'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { parsePayload } from '../../src/bus/postgres.js'
import type { Cluster } from '../../src/cluster.js'
import { eventually, member, record } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

interface Received {
  data: string
  publisher: string
  seq: number
}

function listen(cluster: Cluster, channel = 'test'): Received[] {
  const got: Received[] = []
  cluster.bus.subscribe(channel, (data, meta) => void got.push({ data, publisher: meta.publisher, seq: meta.seq }))
  return got
}

/** A deterministic string of `chars` UTF-16 units mixing ASCII, 2-, 3- and 4-byte UTF-8 characters. */
function text(chars: number, seed = 1): string {
  const pieces = ['abc', 'é', '€', '😀', '|', '\n', 'xyz0123456789']
  let s = ''
  let i = seed
  while (s.length < chars) s += pieces[(i = (i * 31 + 7) % 9973) % pieces.length]
  return s.slice(0, chars).replace(/[\ud800-\udbff]$/, 'a')
}

describe('the bus over PostgreSQL', () => {
  let db: TestDatabase
  const clusters: Cluster[] = []
  const join = async (id: string, extra = {}) => {
    const c = await member(db.url, id, extra)
    clusters.push(c)
    return c
  }

  beforeEach(async () => {
    db = await testDatabase()
  })
  afterEach(async () => {
    await Promise.all(clusters.splice(0).map((c) => c.close()))
    await db.drop()
  })

  it('delivers a 100 KB payload intact to every instance, by reference through bus_payloads', async () => {
    const [a, b] = [await join('a'), await join('b')]
    const atA = listen(a)
    const atB = listen(b)
    const payload = text(100 * 1024)
    expect(Buffer.byteLength(payload)).toBeGreaterThan(100 * 1024)
    await a.bus.publish('test', payload)
    await eventually(() => atA.length === 1 && atB.length === 1, 'the 100 KB message at both instances')
    expect(atA[0]!.data === payload).toBe(true)
    expect(atB[0]!.data === payload).toBe(true)
    const rows = await db.sql<{ bytes: number }[]>`select octet_length(data) as bytes from bus_payloads`
    expect(rows.map((r) => r.bytes)).toEqual([Buffer.byteLength(payload)])
  })

  it('delivers 1,000 messages complete and in publish order, to other instances and to itself', async () => {
    const [a, b] = [await join('a'), await join('b')]
    const atA = listen(a)
    const atB = listen(b)
    const gaps = [...record(a, 'bus:gap'), ...record(b, 'bus:gap')]
    const sent = Array.from({ length: 1000 }, (_, i) => `m${i}:${text(i % 50, i)}`)
    await Promise.all(sent.map((m) => a.bus.publish('test', m)))
    await eventually(() => atB.length >= 1000 && atA.length >= 1000, '1,000 messages at both instances')
    expect(atB.map((m) => m.data)).toEqual(sent)
    expect(atA.map((m) => m.data)).toEqual(sent)
    expect(atB.map((m) => m.seq)).toEqual(atB.map((_, i) => atB[0]!.seq + i))
    expect(gaps).toEqual([])
  })

  it('keeps each publisher’s order when two instances publish at once', async () => {
    const [a, b, c] = [await join('a'), await join('b'), await join('c')]
    const atC = listen(c)
    await Promise.all([
      ...Array.from({ length: 300 }, (_, i) => a.bus.publish('test', `a${i}`)),
      ...Array.from({ length: 300 }, (_, i) => b.bus.publish('test', `b${i}`)),
    ])
    await eventually(() => atC.length >= 600, '600 messages at c')
    const from = (p: Cluster) => atC.filter((m) => m.publisher === p.bus.publisherId).map((m) => m.data)
    expect(from(a)).toEqual(Array.from({ length: 300 }, (_, i) => `a${i}`))
    expect(from(b)).toEqual(Array.from({ length: 300 }, (_, i) => `b${i}`))
  })

  it('batches messages into few NOTIFYs whose payloads parse back to exactly what was published', async () => {
    const [a, b] = [await join('a'), await join('b')]
    const atB = listen(b)
    const raw: string[] = []
    const spy = postgres(db.url, { max: 1, onnotice: () => undefined })
    try {
      await spy.listen('chorus_bus', (payload) => void raw.push(payload))
      const sent = Array.from({ length: 500 }, (_, i) => (i === 250 ? text(20_000, 3) : `n${i}|${text(i % 40, i)}`))
      await Promise.all(sent.map((m) => a.bus.publish('test', m)))
      const mine = () => raw.flatMap(parsePayload).filter((m) => m.publisher === a.bus.publisherId && m.channel === 'test')
      await eventually(() => mine().length >= 500, '500 messages on the raw LISTEN connection')
      const messages = mine()
      expect(messages.map((m) => m.kind)).toEqual(sent.map((_, i) => (i === 250 ? 'R' : 'I')))
      expect(messages.filter((m) => m.kind === 'I').map((m) => m.data)).toEqual(sent.filter((_, i) => i !== 250))
      expect(messages.map((m) => m.seq)).toEqual(messages.map((_, i) => messages[0]!.seq + i))
      // The reference names the bus_payloads row holding the large message.
      const [row] = await db.sql<{ data: Buffer }[]>`select data from bus_payloads where id = ${messages[250]!.data.trim()}`
      expect(row!.data.toString('utf8') === sent[250]).toBe(true)
      // Every NOTIFY stays under PostgreSQL's 8000-byte limit, and most carry many messages.
      for (const p of raw) expect(Buffer.byteLength(p)).toBeLessThan(8000)
      console.log(`500 messages left in ${raw.length} NOTIFYs`)
      expect(raw.length).toBeLessThan(100)
      // The message fetched by reference does not let the inline ones behind it overtake it.
      await eventually(() => atB.length >= 500, '500 messages at b')
      expect(atB.map((m) => m.data)).toEqual(sent)
    } finally {
      await spy.end({ timeout: 1 })
    }
  })

  it('never delivers a message twice: a replayed notification is dropped', async () => {
    const [a, b] = [await join('a'), await join('b')]
    const atB = listen(b)
    const raw: string[] = []
    const spy = postgres(db.url, { max: 1, onnotice: () => undefined })
    try {
      await spy.listen('chorus_bus', (payload) => void raw.push(payload))
      await a.bus.publish('test', 'once')
      await eventually(() => atB.length === 1 && raw.some((p) => p.includes('once')), 'the message')
      const original = raw.find((p) => p.includes('once'))!
      await db.sql`select pg_notify('chorus_bus', ${original})`
      await a.bus.publish('test', 'next')
      await eventually(() => atB.length >= 2, 'the next message')
      await new Promise((r) => setTimeout(r, 100))
      expect(atB.map((m) => m.data)).toEqual(['once', 'next'])
    } finally {
      await spy.end({ timeout: 1 })
    }
  })

  it('delivers a payload containing NUL and other control characters intact', async () => {
    const [a, b] = [await join('a'), await join('b')]
    const atB = listen(b)
    const payloads = ['before\u0000after', '\u0000', 'ctl \u0001\u0002\u001f\u007f end']
    for (const p of payloads) await a.bus.publish('test', p)
    await eventually(() => atB.length === payloads.length, 'the control-character messages')
    expect(atB.map((m) => m.data)).toEqual(payloads)
  })

  it('delivers intact a small message that looks like a reference marker, sent in the same batch as a large one', async () => {
    const [a, b] = [await join('a'), await join('b')]
    const atB = listen(b)
    // The first message leaves alone; the others queue behind it and leave together in one batch.
    const sent = ['first', text(9000, 5), 'x\u0001REF0\u0001y', '\u0001REF1\u0001']
    await Promise.all(sent.map((m) => a.bus.publish('test', m)))
    await eventually(() => atB.length === sent.length, 'four messages')
    expect(atB.map((m) => m.data)).toEqual(sent)
  })

  it('after pg_terminate_backend of the LISTEN connection, reports the loss, re-listens, reports a gap and delivers again', async () => {
    const [a, b] = [await join('a'), await join('b')]
    const atA = listen(a)
    const lost = record(a, 'bus:connection:lost')
    const restored = record(a, 'bus:connection:restored')
    const gaps = record(a, 'bus:gap')
    const peerGaps = record(b, 'bus:gap')

    await b.bus.publish('test', 'before')
    await eventually(() => atA.length === 1, 'the first message')

    const backends = await db.sql<{ pid: number }[]>`
      select pid from pg_stat_activity where datname = current_database() and application_name = 'chorus:listen:a'`
    expect(backends).toHaveLength(1)
    await db.sql`select pg_terminate_backend(${backends[0]!.pid})`

    await eventually(() => gaps.some((g) => g.reason === 'reconnect'), 'bus:gap reconnect at a')
    expect(lost.length).toBe(1)
    expect(restored.length).toBe(1)
    expect(lost[0]!.at).toBeLessThanOrEqual(gaps.find((g) => g.reason === 'reconnect')!.at)
    const [again] = await db.sql<{ n: number }[]>`
      select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name = 'chorus:listen:a'`
    expect(again!.n).toBe(1)

    await b.bus.publish('test', 'after, from b')
    await a.bus.publish('test', 'after, from a')
    await eventually(() => atA.length === 3, 'messages published after the reconnect')
    expect(atA.map((m) => m.data)).toEqual(['before', 'after, from b', 'after, from a'])
    // b's own LISTEN connection was untouched: no gap there.
    expect(peerGaps).toEqual([])
  })

  it('reports a message whose payload can no longer be fetched as a gap, and keeps delivering', async () => {
    const a = await join('a')
    const atA = listen(a)
    const gaps = record(a, 'bus:gap')
    // A reference to a row that does not exist, as when the payload was swept before it was read.
    const forged = `ghost/pub\n1|R|4|20|test${'987654321'.padStart(20, ' ')}`
    await db.sql`select pg_notify('chorus_bus', ${forged})`
    await eventually(() => gaps.length === 1, 'bus:gap payload-expired')
    expect(gaps[0]).toMatchObject({ reason: 'payload-expired', publisher: 'ghost/pub', missed: 1 })
    await a.bus.publish('test', 'still works')
    await eventually(() => atA.length === 1, 'a message after the lost one')
    expect(atA[0]!.data).toBe('still works')
  })

  it('ignores a malformed notification and keeps delivering', async () => {
    const a = await join('a')
    const atA = listen(a)
    await db.sql`select pg_notify('chorus_bus', ${'not a bus payload'})`
    await db.sql`select pg_notify('chorus_bus', ${'x\n1|I|4|999|test'})`
    await a.bus.publish('test', 'fine')
    await eventually(() => atA.length === 1, 'the message after the malformed ones')
    expect(atA.map((m) => m.data)).toEqual(['fine'])
  })

  it('sweeps payloads sent by reference once their retention has passed', async () => {
    const [a, b] = [await join('a', { bus: { payloadRetentionMs: 500 } }), await join('b')]
    const atB = listen(b)
    await a.bus.publish('test', text(10_000, 9))
    await eventually(() => atB.length === 1, 'the large message')
    await eventually(async () => (await db.sql`select 1 from bus_payloads`).length === 0, 'bus_payloads to be swept', 10_000, 100)
  })

  it('refuses a payload over bus.maxPayloadBytes and sends nothing', async () => {
    const [a, b] = [await join('a', { bus: { maxPayloadBytes: 50_000 } }), await join('b')]
    const atB = listen(b)
    await expect(a.bus.publish('test', 'x'.repeat(50_001))).rejects.toMatchObject({ code: 'CHORUS_ERR_BUS_PAYLOAD_TOO_LARGE' })
    await a.bus.publish('test', 'small')
    await eventually(() => atB.length === 1, 'the small message')
    expect(atB.map((m) => m.data)).toEqual(['small'])
    expect(await db.sql`select 1 from bus_payloads`).toHaveLength(0)
  })
})
