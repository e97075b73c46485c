import { Receiver } from 'ws'
import { describe, expect, it } from 'vitest'
import { serialize } from '../../src/realtime/frame.js'
import { MessageFrames } from '../../src/realtime/subscription.js'
import { textFrame } from '../../src/realtime/wire.js'

/** What a WebSocket client reads from `bytes`: its text messages, as `ws` itself parses them. */
function read(bytes: Buffer): string[] {
  const got: string[] = []
  const receiver = new Receiver({ isServer: false })
  receiver.on('message', (data: Buffer, isBinary: boolean) => {
    expect(isBinary).toBe(false)
    got.push(data.toString('utf8'))
  })
  receiver.write(bytes)
  return got
}

describe('WebSocket frames built once for every subscriber', () => {
  it('frames a text message of every length class as ws reads it (7-bit, 16-bit and 64-bit lengths, multi-byte UTF-8)', () => {
    for (const n of [0, 1, 125, 126, 127, 65_535, 65_536, 200_000]) {
      const text = 'é'.repeat(n >> 1) + 'x'.repeat(n & 1)
      expect(read(textFrame(text))).toEqual([text])
      expect(read(textFrame(Buffer.from(text)))).toEqual([text])
    }
    expect(read(Buffer.concat([textFrame('a'), textFrame('b'.repeat(300)), textFrame('\n')]))).toEqual(['a', 'b'.repeat(300), '\n'])
  })

  it('gives each subscription the MESSAGE frame serialize gives, per subscription id and ack mode, and shares equal ones', () => {
    const m = { id: 42, destination: '/topic/a:b', user: '', headers: { 'content-type': 'text/plain', 'x-k': 'v\nw', subscription: 'forged' }, body: 'héllo' }
    const frames = new MessageFrames(m)
    const expected = (id: string, ack: boolean) =>
      serialize('MESSAGE', { subscription: id, 'message-id': 42, destination: m.destination, ...(ack ? { ack: 42 } : {}), 'content-type': 'text/plain', 'x-k': 'v\nw' }, m.body)
    for (const [id, ack] of [['sub-0', false], ['sub-0', true], ['s:1', false], ['sub-0', false]] as const) {
      expect(read(frames.for(id, ack))).toEqual([expected(id, ack)])
    }
    expect(frames.for('sub-0', false)).toBe(frames.for('sub-0', false))
    expect(frames.for('sub-0', true)).not.toBe(frames.for('sub-0', false))
  })
})
