import { describe, expect, it } from 'vitest'
import { parsePayload } from '../../src/bus/postgres.js'

// The NOTIFY payload format, as documented at the top of src/bus/postgres.ts:
//   <publisher>\n  then per message  <seq>|<I or R>|<channel length>|<data length>|<channel><data>
// (lengths in UTF-16 code units). test/integration/bus.postgres.test.ts checks that the transport's
// own packing, read off a real LISTEN connection, parses back to what was published.
interface Part {
  seq: number
  kind: 'I' | 'R'
  channel: string
  data: string
}

function encode(publisher: string, parts: Part[]): string {
  return `${publisher}\n` + parts.map((p) => `${p.seq}|${p.kind}|${p.channel.length}|${p.data.length}|${p.channel}${p.data}`).join('')
}

/** mulberry32: a small seeded generator, so the fuzz is the same on every run. */
function random(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const alphabet = ['a', 'Z', '0', '9', '|', '\n', 'I', 'R', ' ', '-', '€', '😀', '\u0001', '\\', '"', "'", '\t']

function randomString(rnd: () => number, max: number): string {
  const n = Math.floor(rnd() * (max + 1))
  let s = ''
  for (let i = 0; i < n; i++) s += alphabet[Math.floor(rnd() * alphabet.length)]!
  return s
}

/** Parses, and if it returns, checks that what it returned is well-formed. Throws only plain Errors. */
function parseChecked(payload: string): ReturnType<typeof parsePayload> | Error {
  let out: ReturnType<typeof parsePayload>
  try {
    out = parsePayload(payload)
  } catch (err) {
    expect(err).toBeInstanceOf(Error)
    expect((err as Error).constructor).toBe(Error)
    return err as Error
  }
  for (const m of out) {
    expect(['I', 'R']).toContain(m.kind)
    expect(Number.isSafeInteger(m.seq) && m.seq >= 0).toBe(true)
    expect(payload.slice(0, payload.indexOf('\n'))).toBe(m.publisher)
  }
  return out
}

describe('the NOTIFY payload parser', () => {
  it('reads back several messages of one publisher, inline and by reference', () => {
    const parts: Part[] = [
      { seq: 1, kind: 'I', channel: 'chorus.members', data: '' },
      { seq: 2, kind: 'I', channel: 'cache:users', data: 'with | pipes and\nnewlines and 1|I|2|3|' },
      { seq: 3, kind: 'R', channel: 'big', data: '                  42' },
      { seq: 4, kind: 'I', channel: 'emoji', data: '€😀 counted in UTF-16 units' },
    ]
    const publisher = 'node-1/AbC_dEf-12'
    expect(parsePayload(encode(publisher, parts))).toEqual(parts.map((p) => ({ publisher, ...p })))
  })

  it('reads a payload with a header and no messages as no messages', () => {
    expect(parsePayload('node-1/x\n')).toEqual([])
  })

  const malformed: [string, string][] = [
    ['an empty payload', ''],
    ['no publisher line', '1|I|1|1|ab'],
    ['an empty publisher', '\n1|I|1|1|ab'],
    ['an unknown kind', 'p\n1|X|1|1|ab'],
    ['a kind without its bar', 'p\n1|I1|1|ab'],
    ['a missing seq', 'p\n|I|1|1|ab'],
    ['a negative length', 'p\n1|I|-1|1|ab'],
    ['a length that is not a number', 'p\n1|I|one|1|ab'],
    ['a length beyond the safe integers', 'p\n1|I|99999999999999999999|1|ab'],
    ['data shorter than announced', 'p\n1|I|1|5|ab'],
    ['a huge announced length', 'p\n1|I|1|9007199254740991|ab'],
    ['a truncated header', 'p\n1|I|1'],
    ['trailing garbage after a message', 'p\n1|I|1|1|abgarbage'],
  ]
  for (const [what, payload] of malformed) {
    it(`throws a plain Error on ${what}`, () => {
      expect(() => parsePayload(payload)).toThrow(Error)
      expect(parseChecked(payload)).toBeInstanceOf(Error)
    })
  }

  it('round-trips 2,000 random valid payloads (seeded)', () => {
    const rnd = random(0xc0ffee)
    for (let i = 0; i < 2000; i++) {
      const publisher = 'p' + randomString(rnd, 10).replace(/\n/g, '')
      const parts: Part[] = []
      const count = Math.floor(rnd() * 6)
      for (let j = 0; j < count; j++) {
        parts.push({ seq: 1 + Math.floor(rnd() * 1e9), kind: rnd() < 0.8 ? 'I' : 'R', channel: randomString(rnd, 12), data: randomString(rnd, 60) })
      }
      expect(parsePayload(encode(publisher, parts))).toEqual(parts.map((p) => ({ publisher, ...p })))
    }
  })

  it('on 20,000 random mutations (seeded) either throws a plain Error or returns well-formed messages, and always returns', () => {
    const rnd = random(20240601)
    let threw = 0
    let parsed = 0
    const started = Date.now()
    for (let i = 0; i < 20_000; i++) {
      const parts: Part[] = [
        { seq: 1 + Math.floor(rnd() * 100), kind: 'I', channel: randomString(rnd, 8), data: randomString(rnd, 40) },
        { seq: 2 + Math.floor(rnd() * 100), kind: 'R', channel: randomString(rnd, 8), data: randomString(rnd, 20) },
      ]
      let s = encode('pub' + i, parts)
      const edits = 1 + Math.floor(rnd() * 4)
      for (let e = 0; e < edits; e++) {
        const at = Math.floor(rnd() * (s.length + 1))
        const op = rnd()
        if (op < 0.3) s = s.slice(0, at) // truncate
        else if (op < 0.6) s = s.slice(0, at) + randomString(rnd, 3) + s.slice(at) // insert
        else if (op < 0.8) s = s.slice(0, at) + s.slice(at + 1 + Math.floor(rnd() * 3)) // delete
        else s = s.slice(0, at) + String(Math.floor(rnd() * 1e6)) + s.slice(at + 1) // replace with digits
      }
      const result = parseChecked(s)
      if (result instanceof Error) threw++
      else parsed++
    }
    // Both outcomes occur, so the mutations reach past the header checks.
    expect(threw).toBeGreaterThan(1000)
    expect(parsed).toBeGreaterThan(100)
    console.log(`payload fuzz: ${threw} refused, ${parsed} parsed, ${Date.now() - started} ms`)
  })

  it('on 5,000 random strings (seeded) throws a plain Error or returns well-formed messages', () => {
    const rnd = random(7)
    for (let i = 0; i < 5000; i++) parseChecked(randomString(rnd, 80))
  })
})
