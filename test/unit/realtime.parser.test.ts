import { describe, expect, it } from 'vitest'
import type { Frame } from '../../src/realtime/frame.js'
import { serialize, escapeHeader } from '../../src/realtime/frame.js'
import { StompParseError, StompParser, type ParserLimits } from '../../src/realtime/parser.js'

function parseAll(input: Buffer | string, limits?: Partial<ParserLimits>, chunkSizes?: number[]): { frames: Frame[]; heartbeats: number } {
  const frames: Frame[] = []
  let heartbeats = 0
  const p = new StompParser((f) => frames.push(f), { limits, onHeartbeat: () => heartbeats++ })
  const buf = typeof input === 'string' ? Buffer.from(input) : input
  if (!chunkSizes) p.push(buf)
  else {
    let pos = 0
    for (const n of chunkSizes) {
      p.push(buf.subarray(pos, pos + n))
      pos += n
    }
    if (pos < buf.length) p.push(buf.subarray(pos))
  }
  return { frames, heartbeats }
}

const kindOf = (fn: () => unknown): string => {
  try {
    fn()
  } catch (err) {
    if (err instanceof StompParseError) return err.kind
    throw err
  }
  return 'none'
}

describe('the STOMP parser', () => {
  it('parses a frame with headers and a body up to the NUL', () => {
    const { frames } = parseAll('SEND\ndestination:/topic/a\nx:1\n\nhello\u0000')
    expect(frames).toHaveLength(1)
    expect(frames[0]!.command).toBe('SEND')
    expect(frames[0]!.headers).toEqual({ destination: '/topic/a', x: '1' })
    expect(frames[0]!.body.toString()).toBe('hello')
  })

  it('accepts CRLF line endings and counts EOLs between frames as heart-beats', () => {
    const { frames, heartbeats } = parseAll('\n\r\nSEND\r\ndestination:/topic/a\r\n\r\nx\u0000\n\nDISCONNECT\n\n\u0000')
    expect(frames.map((f) => f.command)).toEqual(['SEND', 'DISCONNECT'])
    expect(frames[0]!.headers.destination).toBe('/topic/a')
    expect(heartbeats).toBe(4)
  })

  it('reads exactly content-length bytes, NULs included', () => {
    const body = Buffer.from([1, 0, 2, 0, 3])
    const frame = Buffer.concat([Buffer.from('SEND\ndestination:/topic/a\ncontent-length:5\n\n'), body, Buffer.from([0])])
    const { frames } = parseAll(frame)
    expect([...frames[0]!.body]).toEqual([1, 0, 2, 0, 3])
  })

  it('produces the same frames whatever the chunk boundaries', () => {
    const input = Buffer.from('SEND\ndestination:/topic/a\ncontent-length:3\n\nabc\u0000\nSUBSCRIBE\nid:1\ndestination:/topic/b\\cc\n\n\u0000')
    const whole = parseAll(input).frames
    for (let i = 0; i <= input.length; i++) {
      expect(parseAll(input, undefined, [i]).frames).toEqual(whole)
    }
    expect(parseAll(input, undefined, Array(input.length).fill(1)).frames).toEqual(whole)
  })

  it('decodes header escapes, keeps the first of repeated headers, and trims nothing', () => {
    const { frames } = parseAll('SEND\nk\\c1:a\\nb\\\\c\\r\nk\\c1:second\n pad : v \n\n\u0000')
    expect(frames[0]!.headers).toEqual({ 'k:1': 'a\nb\\c\r', ' pad ': ' v ' })
  })

  it('does not unescape CONNECT headers', () => {
    const { frames } = parseAll('CONNECT\nlogin:a\\cb\n\n\u0000')
    expect(frames[0]!.headers.login).toBe('a\\cb')
  })

  it('refuses undefined escapes, unknown commands, header lines without a name and bad lengths', () => {
    expect(kindOf(() => parseAll('SEND\nk:a\\tb\n\n\u0000'))).toBe('bad-escape')
    expect(kindOf(() => parseAll('SEND\nk:a\\\n\n\u0000'))).toBe('bad-escape')
    expect(kindOf(() => parseAll('PUBLISH\n\n\u0000'))).toBe('unknown-command')
    expect(kindOf(() => parseAll('send\n\n\u0000'))).toBe('unknown-command')
    expect(kindOf(() => parseAll('SEND\nnovalue\n\n\u0000'))).toBe('bad-header')
    expect(kindOf(() => parseAll('SEND\n:v\n\n\u0000'))).toBe('bad-header')
    expect(kindOf(() => parseAll('SEND\ncontent-length:-1\n\n\u0000'))).toBe('bad-content-length')
    expect(kindOf(() => parseAll('SEND\ncontent-length:2\n\nabc\u0000'))).toBe('missing-nul')
    expect(kindOf(() => parseAll('\rX'))).toBe('bad-header')
  })

  it('enforces every limit before buffering past it', () => {
    const limits = { maxFrameBytes: 200, maxHeaders: 3, maxHeaderLineBytes: 50, maxBodyBytes: 100 }
    expect(kindOf(() => parseAll('SEND\na:1\nb:2\nc:3\nd:4\n\n\u0000', limits))).toBe('too-many-headers')
    expect(kindOf(() => parseAll(`SEND\nk:${'x'.repeat(60)}\n\n\u0000`, limits))).toBe('header-line-too-long')
    expect(kindOf(() => parseAll(`SEND\nk:${'x'.repeat(60)}`, limits))).toBe('header-line-too-long')
    expect(kindOf(() => parseAll(`SEND\n\n${'x'.repeat(150)}`, limits))).toBe('body-too-large')
    expect(kindOf(() => parseAll(`SEND\ncontent-length:150\n\n`, limits))).toBe('body-too-large')
    const many = Array.from({ length: 3 }, (_, i) => `h${i}:${'y'.repeat(45)}`).join('\n')
    expect(kindOf(() => parseAll(`SEND\n${many}\n\n${'z'.repeat(90)}\u0000`, limits))).toBe('frame-too-large')
  })

  it('refuses further input after an error', () => {
    const p = new StompParser(() => undefined)
    expect(() => p.push('BOGUS\n\n\u0000')).toThrow(StompParseError)
    expect(() => p.push('SEND\n\n\u0000')).toThrow(StompParseError)
  })

  // push() is synchronous, so a hang would show as this test timing out.
  it('never throws anything but StompParseError and never hangs on random or mutated input', () => {
    let seed = 0x2545f491
    const rand = () => {
      seed ^= seed << 13
      seed ^= seed >>> 17
      seed ^= seed << 5
      return (seed >>> 0) / 0x100000000
    }
    const valid = Buffer.from('SEND\ndestination:/topic/a\\cb\ncontent-length:4\n\nab\u0000c\u0000\nSUBSCRIBE\nid:1\ndestination:/topic/x\n\n\u0000')
    const alphabet = Buffer.from('SENDUBCRI:\\\n\r\u0000abc-0123456789content-length')
    const limits = { maxFrameBytes: 4096, maxHeaders: 16, maxHeaderLineBytes: 256, maxBodyBytes: 2048 }
    for (let round = 0; round < 3000; round++) {
      let input: Buffer
      if (round % 3 === 0) {
        input = Buffer.from(Array.from({ length: Math.floor(rand() * 300) }, () => Math.floor(rand() * 256)))
      } else if (round % 3 === 1) {
        input = Buffer.from(Array.from({ length: Math.floor(rand() * 300) }, () => alphabet[Math.floor(rand() * alphabet.length)]!))
      } else {
        input = Buffer.from(valid)
        for (let m = 0; m < 1 + rand() * 4; m++) input[Math.floor(rand() * input.length)] = Math.floor(rand() * 256)
      }
      const p = new StompParser(() => undefined, { limits })
      let pos = 0
      try {
        while (pos < input.length) {
          const n = 1 + Math.floor(rand() * 40)
          p.push(input.subarray(pos, pos + n))
          pos += n
        }
      } catch (err) {
        expect(err).toBeInstanceOf(StompParseError)
      }
    }
  })
})

describe('server frames', () => {
  it('escape headers (but not on CONNECTED) and carry content-length in bytes', () => {
    expect(escapeHeader('a:b\nc\\d\r')).toBe('a\\cb\\nc\\\\d\\r')
    expect(serialize('MESSAGE', { destination: '/topic/a:b', 'message-id': 7 }, 'é')).toBe('MESSAGE\ndestination:/topic/a\\cb\nmessage-id:7\ncontent-length:2\n\né\u0000')
    expect(serialize('CONNECTED', { version: '1.2', server: 'a:b' })).toBe('CONNECTED\nversion:1.2\nserver:a:b\n\n\u0000')
  })
})
