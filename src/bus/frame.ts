/**
 * The wire form of an envelope on brokers that carry bytes (Redis, NATS), and the size every
 * size-limited transport measures: one UTF-8 buffer
 *   `1\n<publisher>\n<seq>\n<channel>\n<data>`
 * `1` is the format's version. Neither a publisher id nor a channel can hold a newline (the bus
 * refuses such channels and strips newlines from instance ids), so the first four newlines delimit
 * the header and the data is the rest, whatever it holds. Written by hand: five fields need no
 * serialisation library, and JSON would escape (and grow) every quote and newline in the data.
 */
import type { Envelope } from './transport.js'

const VERSION = '1'
const NL = 0x0a

export function encodeFrame(e: Envelope): Buffer {
  return Buffer.from(`${VERSION}\n${e.publisher}\n${e.seq}\n${e.channel}\n${e.data}`, 'utf8')
}

/** The encoded size of `e` in bytes, without encoding it. */
export function frameBytes(e: Envelope): number {
  return VERSION.length + 4 + Buffer.byteLength(e.publisher) + String(e.seq).length + Buffer.byteLength(e.channel) + Buffer.byteLength(e.data)
}

/** Decodes a frame; throws on anything that is not one (the transport logs and skips it). */
export function decodeFrame(frame: Uint8Array): Envelope {
  const buf = Buffer.isBuffer(frame) ? frame : Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength)
  const cuts: number[] = []
  let from = 0
  while (cuts.length < 4) {
    const at = buf.indexOf(NL, from)
    if (at < 0) throw new Error('truncated bus frame')
    cuts.push(at)
    from = at + 1
  }
  const [v, p, s, c] = cuts as [number, number, number, number]
  if (buf.toString('latin1', 0, v) !== VERSION) throw new Error(`unknown bus frame version "${buf.toString('latin1', 0, Math.min(v, 8))}"`)
  const publisher = buf.toString('utf8', v + 1, p)
  const seq = Number(buf.toString('latin1', p + 1, s))
  if (!publisher || !Number.isSafeInteger(seq) || seq < 1) throw new Error('malformed bus frame header')
  return { publisher, seq, channel: buf.toString('utf8', s + 1, c), data: buf.toString('utf8', c + 1) }
}

/**
 * Room the header may take beyond the data: a publisher id (instance id and a suffix), the largest
 * sequence number and a 200-byte channel. Used to tell at start whether `bus.maxPayloadBytes`
 * fits under a server's own message limit.
 */
export const FRAME_HEADER_ALLOWANCE = 1024
