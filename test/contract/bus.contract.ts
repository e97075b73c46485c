// The bus transport contract (src/bus/transport.ts), as one suite every transport runs: delivery to
// every receiver (the sender too), per-publisher order under a burst, the size limit, clusters kept
// apart, a lost connection reported as a gap with nothing lost silently and nothing duplicated, and
// close releasing its sockets. Each transport's file in test/integration/ calls `busContract`.
import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { Bus } from '../../src/bus/bus.js'
import { frameBytes } from '../../src/bus/frame.js'
import type { Envelope, Transport, TransportHandlers } from '../../src/bus/transport.js'
import { ChorusError } from '../../src/errors.js'
import { Events, type ClusterEvents } from '../../src/events.js'
import { eventually, member, record } from '../helpers/cluster.js'
import { testDatabase } from '../helpers/db.js'

/** Two transports of cluster `cluster` (the same name: the same cluster), not started. */
export type MakeTransportPair = (cluster: string) => Promise<[Transport, Transport]>

export interface BusContractOptions {
  /** Cuts every connection the transports hold (kill -9 of the broker and a restart, …); resolves once the server is back. */
  interrupt(): Promise<void>
  /** What `interrupt` does, for the test's name. */
  interruption: string
  /** Messages per publisher in the burst. Default: 10 000. */
  burst?: number
}

type Entry = { at: number; kind: 'deliver'; e: Envelope } | { at: number; kind: 'disconnected' | 'reconnected' }

/** One transport under test and what it saw, stamped with a clock shared by every node. */
interface Node {
  readonly t: Transport
  readonly log: Entry[]
  delivered(publisher?: string): Envelope[]
}

let clock = 0

function recorder(t: Transport): { node: Node; handlers: TransportHandlers } {
  const log: Entry[] = []
  const node: Node = {
    t,
    log,
    delivered: (publisher) => log.flatMap((x) => (x.kind === 'deliver' && (publisher === undefined || x.e.publisher === publisher) ? [x.e] : [])),
  }
  const handlers: TransportHandlers = {
    deliver: (e) => void log.push({ at: ++clock, kind: 'deliver', e }),
    disconnected: () => void log.push({ at: ++clock, kind: 'disconnected' }),
    reconnected: () => void log.push({ at: ++clock, kind: 'reconnected' }),
    lost: (publisher, seq) => {
      throw new Error(`unexpected lost(${publisher}, ${seq}): no payload expires in these tests`)
    },
  }
  return { node, handlers }
}

/** A deterministic payload of exactly `bytes` UTF-8 bytes with newlines, separators and multi-byte characters. */
function payload(bytes: number, seed = 1): string {
  const pieces = ['abc', '\n', 'é', '€', '😀', '|', '1\n2\n', 'xyz']
  const parts: string[] = []
  let size = 0
  let i = seed
  while (size < bytes - 8) {
    const piece = pieces[(i = (i * 31 + 7) % 9973) % pieces.length]!
    parts.push(piece)
    size += Buffer.byteLength(piece)
  }
  return parts.join('') + 'z'.repeat(bytes - size)
}

/** Every sent seq that `node` did not get must be covered by a gap its bus would report. */
function uncovered(node: Node, publisher: string, sentAt: Map<number, number>): number[] {
  // The bus's view: a reconnect forgets every publisher's sequence; a jump in a known one is a gap.
  const coveredBySequence = new Set<number>()
  let last: number | undefined
  const reconnects: number[] = []
  for (const x of node.log) {
    if (x.kind === 'reconnected') {
      reconnects.push(x.at)
      last = undefined
    } else if (x.kind === 'deliver' && x.e.publisher === publisher) {
      if (last !== undefined) for (let s = last + 1; s < x.e.seq; s++) coveredBySequence.add(s)
      last = x.e.seq
    }
  }
  const got = new Set(node.delivered(publisher).map((e) => e.seq))
  const missing: number[] = []
  for (const [seq, at] of sentAt) {
    if (got.has(seq) || coveredBySequence.has(seq)) continue
    if (reconnects.some((r) => r > at)) continue
    missing.push(seq)
  }
  return missing
}

function envelope(publisher: string, seq: number, data: string, channel = 'test'): Envelope {
  return { publisher, seq, channel, data }
}

export function busContract(name: string, makeTransportPair: MakeTransportPair, opts: BusContractOptions): void {
  describe(`the ${name} bus transport keeps the transport contract`, () => {
    const open: Transport[] = []
    let clusters = 0
    const cluster = (label: string) => `${label}${++clusters}${Math.random().toString(36).slice(2, 6)}`

    async function pair(clusterName: string): Promise<[Node, Node]> {
      const transports = await makeTransportPair(clusterName)
      const nodes = transports.map((t) => {
        open.push(t)
        return recorder(t)
      })
      for (const n of nodes) await n.node.t.start(n.handlers)
      return [nodes[0]!.node, nodes[1]!.node]
    }

    afterEach(async () => {
      await Promise.all(open.splice(0).map((t) => t.close()))
    })

    it('delivers every message to every receiver, the sender included, unaltered', async () => {
      const [a, b] = await pair(cluster('all'))
      const fromA = envelope('A/1', 1, 'line one\nline two | é € 😀', 'chorus.cache.users')
      const fromB = envelope('B/1', 1, '', 'x:y/z@eu-1.v2_*')
      await Promise.all([a.t.send(fromA, Buffer.byteLength(fromA.data)), b.t.send(fromB, 0)])
      for (const n of [a, b]) {
        await eventually(() => n.delivered().length >= 2, 'both messages at both receivers')
        expect(n.delivered('A/1')).toEqual([fromA])
        expect(n.delivered('B/1')).toEqual([fromB])
      }
    })

    const burst = opts.burst ?? 10_000
    it(`keeps each publisher's order in a burst of ${burst.toLocaleString('en')} messages from each of two publishers`, async () => {
      const [a, b] = await pair(cluster('burst'))
      const sends: Promise<void>[] = []
      for (let i = 1; i <= burst; i++) {
        const ea = envelope('A', i, `a${i}`)
        const eb = envelope('B', i, `b${i}`)
        sends.push(a.t.send(ea, Buffer.byteLength(ea.data)), b.t.send(eb, Buffer.byteLength(eb.data)))
      }
      await Promise.all(sends)
      const seqs = Array.from({ length: burst }, (_, i) => i + 1)
      for (const n of [a, b]) {
        await eventually(() => n.delivered().length >= 2 * burst, `${2 * burst} messages at a receiver`, 60_000)
        expect(n.delivered('A').map((e) => e.seq)).toEqual(seqs)
        expect(n.delivered('B').map((e) => e.seq)).toEqual(seqs)
        expect(n.delivered('A').every((e) => e.data === `a${e.seq}`)).toBe(true)
        expect(n.log.filter((x) => x.kind !== 'deliver')).toEqual([])
      }
      expect(a.t.queuedBytes).toBe(0)
    })

    it('passes a message at its size limit intact and refuses one byte more', async () => {
      const [a, b] = await pair(cluster('limit'))
      const limit = (a.t as Partial<{ maxEnvelopeBytes: number }>).maxEnvelopeBytes
      if (limit === undefined) {
        // No size limit of its own (PostgreSQL sends large messages by reference): 1 MiB passes intact.
        const big = envelope('A', 1, payload(1024 * 1024))
        await a.t.send(big, 1024 * 1024)
        for (const n of [a, b]) {
          await eventually(() => n.delivered().length === 1, 'the 1 MiB message')
          expect(n.delivered()[0]!.data === big.data).toBe(true)
        }
        return
      }
      expect(limit).toBeGreaterThan(1024)
      const header = frameBytes(envelope('A', 1, ''))
      const atLimit = envelope('A', 1, payload(limit - header))
      expect(frameBytes(atLimit)).toBe(limit)
      await a.t.send(atLimit, Buffer.byteLength(atLimit.data))
      const over = envelope('A', 2, payload(limit - header + 1))
      const refused = await a.t.send(over, Buffer.byteLength(over.data)).then(
        () => null,
        (err: unknown) => err,
      )
      expect(refused).toBeInstanceOf(ChorusError)
      expect((refused as ChorusError).code).toBe('CHORUS_ERR_BUS_PAYLOAD_TOO_LARGE')
      expect((refused as ChorusError).details).toMatchObject({ bytes: limit + 1, limit })
      await a.t.send(envelope('A', 3, 'after'), 5)
      for (const n of [a, b]) {
        await eventually(() => n.delivered().length >= 2, 'the message at the limit and the one after')
        expect(n.delivered().map((e) => e.seq)).toEqual([1, 3])
        expect(n.delivered()[0]!.data === atLimit.data).toBe(true)
      }
    })

    it('keeps two clusters on one server apart', async () => {
      const [a1, b1] = await pair(cluster('one'))
      const [a2, b2] = await pair(cluster('two'))
      await a1.t.send(envelope('one', 1, 'for cluster one'), 15)
      await a2.t.send(envelope('two', 1, 'for cluster two'), 15)
      await a1.t.send(envelope('one', 2, 'last'), 4)
      await a2.t.send(envelope('two', 2, 'last'), 4)
      for (const [n, own] of [[a1, 'one'], [b1, 'one'], [a2, 'two'], [b2, 'two']] as const) {
        await eventually(() => n.delivered().length >= 2, `cluster ${own}'s messages`)
        expect(n.delivered().map((e) => `${e.publisher}:${e.seq}`)).toEqual([`${own}:1`, `${own}:2`])
      }
    })

    it(`reports a lost connection (${opts.interruption}) as disconnected then reconnected, loses nothing silently and duplicates nothing`, async () => {
      const [a, b] = await pair(cluster('loss'))
      const nodes = [a, b]
      const publishers = [
        { node: a, id: 'A', seq: 0, sentAt: new Map<number, number>(), refused: 0 },
        { node: b, id: 'B', seq: 0, sentAt: new Map<number, number>(), refused: 0 },
      ]
      let stop = false
      const sending = (async () => {
        while (!stop) {
          for (const p of publishers) {
            const seq = ++p.seq
            p.sentAt.set(seq, ++clock)
            const data = `${p.id}${seq}`
            void p.node.t.send(envelope(p.id, seq, data), data.length).catch(() => void p.refused++)
          }
          await new Promise((r) => setTimeout(r, 2))
        }
      })()
      const seen = (n: Node, p: (typeof publishers)[number], after: number) => n.delivered(p.id).some((e) => e.seq > after)
      try {
        // Traffic flows before the cut ...
        await eventually(() => nodes.every((n) => publishers.every((p) => seen(n, p, 20))), 'traffic before the cut', 30_000)
        await opts.interrupt()
        // ... both receivers report the loss and recover ...
        await eventually(() => nodes.every((n) => n.log.some((x) => x.kind === 'reconnected')), 'reconnected at both receivers', 30_000)
        // ... and messages sent after recovery arrive again.
        const after = publishers.map((p) => p.seq)
        await eventually(() => nodes.every((n) => publishers.every((p, i) => seen(n, p, after[i]! + 20))), 'traffic after recovery', 30_000)
      } finally {
        stop = true
        await sending
      }
      // Let the last sends settle, so every sent message has had its chance.
      await eventually(() => a.t.queuedBytes === 0 && b.t.queuedBytes === 0, 'nothing queued', 10_000)
      const last = publishers.map((p) => p.seq)
      await eventually(() => nodes.every((n) => publishers.every((p, i) => n.delivered(p.id).at(-1)?.seq === last[i])), 'the last messages', 10_000).catch(() => undefined)
      for (const n of nodes) {
        const states = n.log.filter((x) => x.kind !== 'deliver').map((x) => x.kind)
        expect(states.length).toBeGreaterThanOrEqual(2)
        // Every loss is reported once, and recovery follows it: disconnected, reconnected, disconnected, …
        expect(states).toEqual(states.map((_, i) => (i % 2 === 0 ? 'disconnected' : 'reconnected')))
        expect(states.at(-1)).toBe('reconnected')
        for (const p of publishers) {
          const seqs = n.delivered(p.id).map((e) => e.seq)
          // Never twice, never out of order.
          expect(seqs.every((s, i) => i === 0 || s > seqs[i - 1]!)).toBe(true)
          expect(n.delivered(p.id).every((e) => e.data === `${p.id}${e.seq}`)).toBe(true)
          // Every message sent either arrived or is covered by a gap the bus reports.
          expect(uncovered(n, p.id, p.sentAt)).toEqual([])
        }
      }
    })

    it(`through the bus, turns a lost connection (${opts.interruption}) into bus:gap events and delivers again`, async () => {
      const [ta, tb] = await makeTransportPair(cluster('bus'))
      const silent = pino({ level: 'silent' })
      const nodes = [ta, tb].map((t, i) => {
        const events = new Events(silent)
        const bus = new Bus(t, { instanceId: `i${i}`, maxPayloadBytes: 64 * 1024, maxQueueBytes: 1024 * 1024, events, log: silent })
        const seen: string[] = []
        const gaps: ClusterEvents['bus:gap'][] = []
        events.on('bus:connection:lost', () => void seen.push('lost'))
        events.on('bus:connection:restored', () => void seen.push('restored'))
        events.on('bus:gap', (g) => void gaps.push(g))
        const got: string[] = []
        bus.subscribe('test', (data) => void got.push(data))
        return { bus, seen, gaps, got }
      })
      try {
        for (const n of nodes) await n.bus.start()
        await nodes[0]!.bus.publish('test', 'before')
        await eventually(() => nodes.every((n) => n.got.includes('before')), 'the first message')
        await opts.interrupt()
        await eventually(() => nodes.every((n) => n.seen.includes('restored')), 'bus:connection:restored everywhere', 30_000)
        for (const n of nodes) {
          expect(n.seen.slice(0, 2)).toEqual(['lost', 'restored'])
          expect(n.gaps).toContainEqual({ reason: 'reconnect' })
          expect(n.bus.stats.reconnects).toBeGreaterThanOrEqual(1)
        }
        // Publishing goes on after recovery (a publish may wait while the publisher reconnects).
        await eventually(
          async () => {
            await nodes[1]!.bus.publish('test', 'after').catch(() => undefined)
            return nodes.every((n) => n.got.includes('after'))
          },
          'a message after recovery',
          30_000,
          200,
        )
      } finally {
        await Promise.all(nodes.map((n) => n.bus.close()))
      }
    })

    it('releases its sockets on close and refuses to send afterwards', async () => {
      // A first pair warms up whatever the server side keeps (databases, pools) …
      const name = cluster('close')
      const [w1, w2] = await pair(name)
      await Promise.all([w1.t.close(), w2.t.close()])
      const sockets = () => process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'TLSWrap').length
      const baseline = sockets()
      // … so that what a second pair opens is its own, and must be gone after close.
      const [a, b] = await pair(name)
      await a.t.send(envelope('A', 1, 'hello'), 5)
      await eventually(() => b.delivered().length === 1, 'a message before close')
      expect(sockets()).toBeGreaterThanOrEqual(baseline)
      await Promise.all([a.t.close(), b.t.close()])
      await eventually(() => sockets() <= baseline, `sockets back to ${baseline} (now ${sockets()})`, 10_000)
      const late = await a.t.send(envelope('A', 2, 'late'), 4).then(
        () => null,
        (err: unknown) => err,
      )
      expect((late as ChorusError | null)?.code).toBe('CHORUS_ERR_BUS_CLOSED')
    })
  })
}

/** A logger that keeps what it logs, to check what an operator would read. */
export function recordingLogger(): { log: ReturnType<typeof pino>; lines: { level: number; msg: string; [k: string]: unknown }[] } {
  const lines: { level: number; msg: string }[] = []
  const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as { level: number; msg: string }) })
  return { log, lines }
}

/** Starts `t` with handlers that ignore everything (for start-time checks). */
export async function startQuietly(t: Transport): Promise<void> {
  await t.start({ deliver: () => undefined, reconnected: () => undefined, disconnected: () => undefined, lost: () => undefined })
}

/**
 * Registers a test that two cluster members with `bus: { url }` talk through that broker, and that
 * `interrupt` (a broker restart) reaches them as a reconnect `bus:gap` after which they talk again.
 */
export function clusterOverBus(name: string, url: () => string, interrupt: () => Promise<void>): void {
  it(`runs a cluster whose bus.url names ${name}: members talk through it and a broker restart is a gap`, async () => {
    const db = await testDatabase()
    const a = await member(db.url, 'a', { bus: { url: url() } })
    const b = await member(db.url, 'b', { bus: { url: url() } })
    try {
      const got: string[] = []
      b.bus.subscribe('test', (d) => void got.push(d))
      await a.bus.publish('test', 'hello')
      await eventually(() => got.includes('hello'), 'a message from a at b')
      const gaps = record(b, 'bus:gap')
      await interrupt()
      await eventually(() => gaps.some((g) => g.reason === 'reconnect'), 'a reconnect gap at b', 30_000)
      await eventually(
        async () => {
          await a.bus.publish('test', 'again').catch(() => undefined)
          return got.includes('again')
        },
        'a message after the restart',
        30_000,
        200,
      )
    } finally {
      await Promise.all([a.close(), b.close()])
      await db.drop()
    }
  })
}
