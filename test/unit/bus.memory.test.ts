import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { Bus } from '../../src/bus/bus.js'
import { frameBytes } from '../../src/bus/frame.js'
import { defaultHub, MemoryHub, MemoryTransport } from '../../src/bus/memory.js'
import { createTransport } from '../../src/bus/select.js'
import { ChorusError } from '../../src/errors.js'
import { Events, type ClusterEvents } from '../../src/events.js'

const log = pino({ level: 'silent' })

interface Node {
  bus: Bus
  transport: MemoryTransport
  events: Events
  gaps: ClusterEvents['bus:gap'][]
  received: { data: string; publisher: string; seq: number; local: boolean }[]
}

const open: Bus[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((b) => b.close()))
})

async function node(hub: MemoryHub, instanceId: string, limits: { maxPayloadBytes?: number; maxQueueBytes?: number } = {}): Promise<Node> {
  const events = new Events(log)
  const transport = new MemoryTransport(hub)
  const bus = new Bus(transport, {
    instanceId,
    maxPayloadBytes: limits.maxPayloadBytes ?? 1024 * 1024,
    maxQueueBytes: limits.maxQueueBytes ?? 16 * 1024 * 1024,
    events,
    log,
  })
  await bus.start()
  open.push(bus)
  const n: Node = { bus, transport, events, gaps: [], received: [] }
  events.on('bus:gap', (g) => void n.gaps.push(g))
  bus.subscribe('test', (data, meta) => void n.received.push({ data, ...meta }))
  return n
}

/** Lets the memory transport deliver (it delivers a macrotask later). */
const settle = () => new Promise((r) => setImmediate(() => setImmediate(r)))

async function rejection(p: Promise<unknown>): Promise<ChorusError> {
  try {
    await p
  } catch (err) {
    expect(err).toBeInstanceOf(ChorusError)
    return err as ChorusError
  }
  throw new Error('the promise resolved')
}

describe('the bus on the in-memory transport', () => {
  it('delivers each publisher’s messages in order to every instance, its own included', async () => {
    const hub = new MemoryHub()
    const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((id) => node(hub, id)))
    for (let i = 0; i < 200; i++) {
      void a!.bus.publish('test', `a${i}`)
      void b!.bus.publish('test', `b${i}`)
    }
    await settle()
    for (const n of [a!, b!, c!]) {
      expect(n.received.filter((m) => m.publisher === a!.bus.publisherId).map((m) => m.data)).toEqual(Array.from({ length: 200 }, (_, i) => `a${i}`))
      expect(n.received.filter((m) => m.publisher === b!.bus.publisherId).map((m) => m.data)).toEqual(Array.from({ length: 200 }, (_, i) => `b${i}`))
      expect(n.gaps).toEqual([])
    }
    expect(a!.received.filter((m) => m.local).every((m) => m.publisher === a!.bus.publisherId)).toBe(true)
    expect(a!.received.filter((m) => m.local)).toHaveLength(200)
    expect(c!.received.some((m) => m.local)).toBe(false)
  })

  it('numbers each publisher’s messages from 1 without holes', async () => {
    const hub = new MemoryHub()
    const a = await node(hub, 'a')
    for (let i = 0; i < 5; i++) void a.bus.publish('test', String(i))
    await settle()
    expect(a.received.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5])
  })

  it('delivers only to subscribers of the channel, and not after unsubscribe', async () => {
    const hub = new MemoryHub()
    const a = await node(hub, 'a')
    const other: string[] = []
    const off = a.bus.subscribe('other', (d) => void other.push(d))
    void a.bus.publish('other', 'one')
    void a.bus.publish('test', 'for test')
    await settle()
    off()
    void a.bus.publish('other', 'two')
    await settle()
    expect(other).toEqual(['one'])
    expect(a.received.map((m) => m.data)).toEqual(['for test'])
  })

  it('keeps delivering to other subscribers when one throws', async () => {
    const hub = new MemoryHub()
    const a = await node(hub, 'a')
    a.bus.subscribe('test', () => {
      throw new Error('subscriber bug')
    })
    const after: string[] = []
    a.bus.subscribe('test', (d) => void after.push(d))
    void a.bus.publish('test', 'x')
    void a.bus.publish('test', 'y')
    await settle()
    expect(after).toEqual(['x', 'y'])
  })

  it('reports dropped messages as a sequence gap naming the publisher and how many were missed', async () => {
    const hub = new MemoryHub()
    const [a, b] = await Promise.all([node(hub, 'a'), node(hub, 'b')])
    void a!.bus.publish('test', 'm1')
    await settle()
    hub.drop(3)
    for (const m of ['m2', 'm3', 'm4', 'm5']) void a!.bus.publish('test', m)
    await settle()
    for (const n of [a!, b!]) {
      expect(n.received.map((m) => m.data)).toEqual(['m1', 'm5'])
      expect(n.gaps).toEqual([{ reason: 'sequence', publisher: a!.bus.publisherId, missed: 3 }])
    }
    expect(b!.bus.stats.gaps).toBe(1)
  })

  it('does not report a gap for the first message heard from a publisher', async () => {
    const hub = new MemoryHub()
    const a = await node(hub, 'a')
    hub.drop(2)
    void a.bus.publish('test', 'lost1')
    void a.bus.publish('test', 'lost2')
    const late = await node(hub, 'late')
    void a.bus.publish('test', 'first heard')
    await settle()
    expect(late.received.map((m) => m.data)).toEqual(['first heard'])
    expect(late.gaps).toEqual([])
  })

  it('reports a transport reconnect as a gap, then delivers again without a false sequence gap', async () => {
    const hub = new MemoryHub()
    const [a, b] = await Promise.all([node(hub, 'a'), node(hub, 'b')])
    const lost: string[] = []
    b!.events.on('bus:connection:lost', (e) => void lost.push(e.error))
    let restored = 0
    b!.events.on('bus:connection:restored', () => void restored++)
    void a!.bus.publish('test', 'before')
    await settle()
    b!.transport.reconnect()
    // While b was "away", a sent messages b never saw; b must not count them as a sequence gap
    // on top of the reconnect gap, because it forgot every sequence on reconnect.
    hub.drop(2)
    void a!.bus.publish('test', 'missed1')
    void a!.bus.publish('test', 'missed2')
    void a!.bus.publish('test', 'after')
    await settle()
    expect(lost).toHaveLength(1)
    expect(restored).toBe(1)
    expect(b!.gaps).toEqual([{ reason: 'reconnect' }])
    expect(b!.received.map((m) => m.data)).toEqual(['before', 'after'])
    expect(a!.gaps).toEqual([{ reason: 'sequence', publisher: a!.bus.publisherId, missed: 2 }])
  })

  it('refuses a payload over maxPayloadBytes with a typed error and sends nothing', async () => {
    const hub = new MemoryHub()
    const [a, b] = await Promise.all([node(hub, 'a', { maxPayloadBytes: 1000 }), node(hub, 'b')])
    const err = await rejection(a!.bus.publish('test', 'x'.repeat(1001)))
    expect(err.code).toBe('CHORUS_ERR_BUS_PAYLOAD_TOO_LARGE')
    expect(err.details).toEqual({ bytes: 1001, limit: 1000 })
    // The limit counts UTF-8 bytes, not characters: 334 × 3 bytes = 1002.
    expect((await rejection(a!.bus.publish('test', '€'.repeat(334)))).code).toBe('CHORUS_ERR_BUS_PAYLOAD_TOO_LARGE')
    await a!.bus.publish('test', 'x'.repeat(1000))
    await settle()
    expect(b!.received.map((m) => m.data.length)).toEqual([1000])
    // The refused messages used no sequence number: no gap at the receiver.
    expect(b!.received[0]!.seq).toBe(1)
    expect(b!.gaps).toEqual([])
    expect(a!.bus.stats.published).toBe(1)
  })

  it('refuses invalid channel names with a typed error, on publish and on subscribe', async () => {
    const hub = new MemoryHub()
    const [a, b] = await Promise.all([node(hub, 'a'), node(hub, 'b')])
    const bad: unknown[] = ['', 'has space', 'new\nline', 'x'.repeat(201), 'ünïcode', 'semi;colon', 42, null]
    for (const channel of bad) {
      const err = await rejection(a!.bus.publish(channel as string, 'data'))
      expect(err.code, String(channel)).toBe('CHORUS_ERR_BUS_CHANNEL_INVALID')
      expect(() => a!.bus.subscribe(channel as string, () => undefined)).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_BUS_CHANNEL_INVALID' }))
    }
    for (const channel of ['a', 'x'.repeat(200), 'cache:users/42@eu-1.v2_*']) {
      await expect(a!.bus.publish(channel, 'ok')).resolves.toBeUndefined()
    }
    await settle()
    expect(b!.gaps).toEqual([])
  })

  it('refuses data that is not a string and sends nothing', async () => {
    const hub = new MemoryHub()
    const a = await node(hub, 'a')
    const err = await rejection(a.bus.publish('test', { not: 'a string' } as unknown as string))
    expect(err.code).toMatch(/^CHORUS_ERR_BUS_/)
    await settle()
    expect(a.received).toEqual([])
  })

  it('refuses to publish once closed', async () => {
    const hub = new MemoryHub()
    const a = await node(hub, 'a')
    await a.bus.close()
    expect((await rejection(a.bus.publish('test', 'late'))).code).toBe('CHORUS_ERR_BUS_CLOSED')
  })

  it('gives each bus a distinct publisher id that starts with the instance id', async () => {
    const hub = new MemoryHub()
    const [a1, a2] = await Promise.all([node(hub, 'same'), node(hub, 'same')])
    expect(a1!.bus.publisherId).toMatch(/^same\//)
    expect(a1!.bus.publisherId).not.toBe(a2!.bus.publisherId)
  })
})

describe('the in-memory transport’s limits', () => {
  const handlersOf = (log: string[]) => ({
    deliver: (e: { data: string }) => void log.push(`deliver ${e.data.length}`),
    disconnected: (err: Error) => void log.push(`disconnected: ${err.message}`),
    reconnected: () => void log.push('reconnected'),
    lost: () => undefined,
  })

  it('refuses a message whose frame is over the hub’s limit, and passes one at the limit', async () => {
    const hub = new MemoryHub({ maxEnvelopeBytes: 100 })
    const t = new MemoryTransport(hub)
    const seen: string[] = []
    await t.start(handlersOf(seen))
    const header = frameBytes({ publisher: 'p', seq: 1, channel: 'c', data: '' })
    await t.send({ publisher: 'p', seq: 1, channel: 'c', data: 'x'.repeat(100 - header) })
    const err = await rejection(t.send({ publisher: 'p', seq: 2, channel: 'c', data: 'x'.repeat(101 - header) }))
    expect(err.code).toBe('CHORUS_ERR_BUS_PAYLOAD_TOO_LARGE')
    expect(err.details).toEqual({ bytes: 101, limit: 100 })
    await settle()
    expect(seen).toEqual([`deliver ${100 - header}`])
    await t.close()
  })

  it('a message over the transport limit is refused by the bus before it is numbered: receivers see no gap', async () => {
    const hub = new MemoryHub({ maxEnvelopeBytes: 300 })
    const a = await node(hub, 'a')
    const b = await node(hub, 'b')
    await a.bus.publish('test', 'one')
    const err = await rejection(a.bus.publish('test', 'x'.repeat(400)))
    expect(err.code).toBe('CHORUS_ERR_BUS_PAYLOAD_TOO_LARGE')
    await a.bus.publish('test', 'two')
    await settle()
    expect(b.received.map((m) => [m.data, m.seq])).toEqual([['one', 1], ['two', 2]])
    expect(b.gaps).toEqual([])
  })

  it('cuts off a receiver with too much waiting, reporting the loss as disconnected then reconnected', async () => {
    const hub = new MemoryHub({ maxPendingBytes: 1000 })
    const [sender, slow] = [new MemoryTransport(hub), new MemoryTransport(hub)]
    const atSender: string[] = []
    const atSlow: string[] = []
    await sender.start(handlersOf(atSender))
    await slow.start(handlersOf(atSlow))
    // Ten 200-byte frames in one tick: more than 1000 bytes wait for each receiver before it runs.
    for (let seq = 1; seq <= 10; seq++) await sender.send({ publisher: 'p', seq, channel: 'c', data: 'x'.repeat(200 - frameBytes({ publisher: 'p', seq, channel: 'c', data: '' })) })
    await settle()
    for (const seen of [atSender, atSlow]) {
      expect(seen[0]).toMatch(/^disconnected: more than 1000 bytes waited/)
      expect(seen.slice(1)).toEqual(['reconnected'])
    }
    // Afterwards it receives again.
    await sender.send({ publisher: 'p', seq: 11, channel: 'c', data: 'after' })
    await settle()
    expect(atSlow.at(-1)).toBe('deliver 5')
    await Promise.all([sender.close(), slow.close()])
    expect(hub.size).toBe(0)
  })

  it('loses what is sent while the hub restarts and reports it to every member as a gap', async () => {
    const hub = new MemoryHub()
    const [a, b] = await Promise.all([node(hub, 'a'), node(hub, 'b')])
    void a!.bus.publish('test', 'before')
    await settle()
    const restarting = hub.interrupt()
    void a!.bus.publish('test', 'during')
    await restarting
    void a!.bus.publish('test', 'after')
    await settle()
    for (const n of [a!, b!]) {
      expect(n.received.map((m) => m.data)).toEqual(['before', 'after'])
      expect(n.gaps).toEqual([{ reason: 'reconnect' }])
    }
  })

  it('is what a memory: bus URL gives, on one process-wide hub per cluster', async () => {
    const t1 = createTransport({ url: 'memory:' }, { log })
    const t2 = createTransport({ url: 'memory:' }, { log })
    expect(t1).toBeInstanceOf(MemoryTransport)
    const seen: string[] = []
    await t1.start(handlersOf([]))
    await t2.start(handlersOf(seen))
    await t1.send({ publisher: 'p', seq: 1, channel: 'c', data: 'hello' }, 5)
    await settle()
    expect(seen).toEqual(['deliver 5'])
    expect(defaultHub.size).toBe(2)
    // Another cluster in the same process has a hub of its own.
    const other = createTransport({ url: 'memory:' }, { log, prefix: 'other' })
    const atOther: string[] = []
    await other.start(handlersOf(atOther))
    await t1.send({ publisher: 'p', seq: 2, channel: 'c', data: 'mine' }, 4)
    await settle()
    expect(atOther).toEqual([])
    expect(seen).toEqual(['deliver 5', 'deliver 4'])
    await Promise.all([t1.close(), t2.close(), other.close()])
    expect(defaultHub.size).toBe(0)
    expect((await rejection(t1.send({ publisher: 'p', seq: 3, channel: 'c', data: 'late' }, 4))).code).toBe('CHORUS_ERR_BUS_CLOSED')
  })
})
