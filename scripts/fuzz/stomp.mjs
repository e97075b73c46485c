// Fuzz target: the STOMP frame parser (src/realtime/parser.ts), fed what a WebSocket client controls.
// Inputs are built by fast-check from the STOMP grammar (commands, headers with good and bad escapes,
// content-length right, wrong or absurd, bodies with NULs, LF or CRLF, heart-beats between frames),
// then mutated byte-wise, or are plain random bytes; each is fed whole and again split at random
// points, with the default limits or small ones. The check: the parser only ever throws
// StompParseError, refuses input after one, emits frames within its limits, and gives the same
// frames and the same outcome whatever the chunk boundaries (a frame over two limits may be refused
// for either).
import fc from 'fast-check'

const COMMANDS = ['CONNECT', 'STOMP', 'SEND', 'SUBSCRIBE', 'UNSUBSCRIBE', 'ACK', 'NACK', 'BEGIN', 'COMMIT', 'ABORT', 'DISCONNECT']
const HEADER_NAMES = ['destination', 'id', 'content-length', 'receipt', 'ack', 'chorus-last-id', 'login', 'passcode', 'heart-beat', 'accept-version', 'host', 'content-type', 'transaction', 'message-id', 'subscription']

const enc = (s) => Buffer.from(s, 'utf8')

/** A header name or value: plain text, the four defined escapes, undefined ones, colons, CRs, non-ASCII. */
const headerText = fc
  .array(
    fc.oneof(
      { weight: 6, arbitrary: fc.string({ maxLength: 12 }) },
      { weight: 2, arbitrary: fc.constantFrom('\\n', '\\r', '\\c', '\\\\') },
      { weight: 1, arbitrary: fc.constantFrom('\\t', '\\', '\\x', ':', '\r', '/topic/a', '/user/queue/r', '/app/x', 'é', '\u{1F600}', '\u0000') },
    ),
    { maxLength: 8 },
  )
  .map((parts) => parts.join(''))

const contentLength = (bodyLength) =>
  fc.oneof(
    { weight: 6, arbitrary: fc.constant(String(bodyLength)) },
    { weight: 1, arbitrary: fc.nat({ max: bodyLength + 8 }).map(String) },
    {
      weight: 1,
      arbitrary: fc.constantFrom('-1', '', ' 1', '1 ', '0x10', '1e3', '00000000003', '9999999999', '99999999999', '4294967296', '+4', '3.0', '٣'),
    },
  )

const body = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 64 }).map(enc) },
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 256 }).map((b) => Buffer.from(b)) },
  { weight: 1, arbitrary: fc.integer({ min: 1000, max: 70 * 1024 }).map((n) => Buffer.alloc(n, 0x61)) },
)

const eol = fc.constantFrom('\n', '\n', '\r\n', '\r')

/** One frame as bytes: command, headers (maybe with content-length), blank line, body, NUL. */
const frame = fc
  .record({
    command: fc.oneof({ weight: 12, arbitrary: fc.constantFrom(...COMMANDS) }, { weight: 1, arbitrary: fc.constantFrom('send', 'MESSAGE', 'CONNECTED', '', 'SEND ', ' SEND', 'ERROR') }),
    headers: fc.array(fc.tuple(fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...HEADER_NAMES) }, { weight: 1, arbitrary: headerText }), headerText, eol), { maxLength: 10 }),
    many: fc.oneof({ weight: 20, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 60, max: 130 }) }),
    longLine: fc.oneof({ weight: 20, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 8 * 1024 - 4, max: 9 * 1024 }) }),
    body,
    withLength: fc.boolean(),
    eol,
    end: fc.oneof({ weight: 10, arbitrary: fc.constant('\u0000') }, { weight: 1, arbitrary: fc.constantFrom('', 'x', '\n', '\u0000\u0000') }),
  })
  .chain((f) => contentLength(f.body.length).map((cl) => ({ ...f, cl })))
  .map((f) => {
    const parts = [enc(f.command + f.eol)]
    for (const [name, value, e] of f.headers) parts.push(enc(`${name}:${value}${e}`))
    for (let i = 0; i < f.many; i++) parts.push(enc(`h${i}:v${f.eol}`))
    if (f.longLine) parts.push(enc(`x:${'y'.repeat(f.longLine)}${f.eol}`))
    if (f.withLength) parts.push(enc(`content-length:${f.cl}${f.eol}`))
    parts.push(enc(f.eol), f.body, enc(f.end))
    return Buffer.concat(parts)
  })

/** A byte-level mutation: position and length are fractions of the input, so they scale with it. */
const mutation = fc.record({
  op: fc.constantFrom('flip', 'set', 'insert', 'delete', 'duplicate', 'truncate'),
  at: fc.double({ min: 0, max: 1, noNaN: true }),
  len: fc.integer({ min: 1, max: 64 }),
  byte: fc.oneof(fc.constantFrom(0x00, 0x0a, 0x0d, 0x3a, 0x5c, 0xff, 0x80), fc.integer({ min: 0, max: 255 })),
})

export function mutate(input, mutations) {
  let b = Buffer.from(input)
  for (const m of mutations) {
    const at = Math.min(b.length, Math.floor(m.at * (b.length + 1)))
    switch (m.op) {
      case 'flip':
        if (at < b.length) b[at] ^= 1 << (m.len % 8)
        break
      case 'set':
        if (at < b.length) b[at] = m.byte
        break
      case 'insert':
        b = Buffer.concat([b.subarray(0, at), Buffer.alloc(Math.min(m.len, 8), m.byte), b.subarray(at)])
        break
      case 'delete':
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.len)])
        break
      case 'duplicate':
        b = Buffer.concat([b.subarray(0, at + m.len), b.subarray(at)])
        break
      case 'truncate':
        b = b.subarray(0, at)
        break
    }
  }
  return b
}

/** Split points as fractions of the input, so the same input is also fed in pieces. */
const splits = fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 12 })

/** The frame parser limits: the defaults most of the time, small ones to reach every limit check. */
const limits = fc.oneof(
  { weight: 3, arbitrary: fc.constant(undefined) },
  {
    weight: 1,
    arbitrary: fc.record({
      maxFrameBytes: fc.integer({ min: 16, max: 4096 }),
      maxHeaders: fc.integer({ min: 0, max: 16 }),
      maxHeaderLineBytes: fc.integer({ min: 4, max: 512 }),
      maxBodyBytes: fc.integer({ min: 0, max: 2048 }),
    }),
  },
)

const frames = fc.tuple(fc.array(fc.tuple(fc.constantFrom('', '', '\n', '\r\n', '\n\n', '\r'), frame), { minLength: 1, maxLength: 4 })).map(([fs]) => Buffer.concat(fs.flatMap(([hb, f]) => [enc(hb), f])))

/** What one fuzz input is: the bytes, how to split them, and the limits to parse them under. */
export const stompInput = fc.record({
  bytes: fc.oneof(
    { weight: 4, arbitrary: frames },
    { weight: 4, arbitrary: fc.tuple(frames, fc.array(mutation, { minLength: 1, maxLength: 6 })).map(([b, ms]) => mutate(b, ms)) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 512 }).map((b) => Buffer.from(b)) },
  ),
  splits,
  limits,
})

/** Serialises an input for a failure file (the bytes base64, the rest as is). */
export function describeStompInput(input) {
  return { bytes: Buffer.from(input.bytes).toString('base64'), splits: input.splits, limits: input.limits ?? null }
}

/**
 * The check, against the parser module given (src/ in the test suite, dist/ from the command line).
 * Returns the outcome: 'frames' (all parsed, maybe waiting for more) or the error kind.
 */
export function stompCheck({ StompParser, StompParseError }) {
  const defaults = { maxFrameBytes: 80 * 1024, maxHeaders: 64, maxHeaderLineBytes: 8 * 1024, maxBodyBytes: 64 * 1024 }
  const COMMAND_SET = new Set(COMMANDS)
  const LIMITS = new Set(['frame-too-large', 'header-line-too-long', 'body-too-large', 'too-many-headers'])

  function parse(bytes, points, lim) {
    const frames = []
    let heartbeats = 0
    const p = new StompParser((f) => frames.push(f), { limits: lim, onHeartbeat: () => heartbeats++ })
    const cuts = [...new Set(points.map((x) => Math.floor(x * bytes.length)))].sort((a, b) => a - b)
    let pos = 0
    let error = null
    try {
      for (const cut of [...cuts, bytes.length]) {
        if (cut <= pos) continue
        p.push(bytes.subarray(pos, cut))
        pos = cut
      }
      if (bytes.length === 0) p.push(bytes)
    } catch (err) {
      if (!(err instanceof StompParseError)) throw new Error(`the parser threw ${err?.name ?? typeof err}: ${err?.message ?? err}`, { cause: err })
      error = err.kind
      // After an error the parser refuses anything more, with the same error class.
      try {
        p.push(Buffer.from('SEND\n\n\u0000'))
        throw new Error('the parser accepted input after an error')
      } catch (again) {
        if (!(again instanceof StompParseError)) throw again
      }
    }
    return { frames, heartbeats, error }
  }

  return (input) => {
    const lim = { ...defaults, ...input.limits }
    const whole = parse(input.bytes, [], input.limits)
    for (const f of whole.frames) {
      if (!COMMAND_SET.has(f.command)) throw new Error(`a frame with command ${JSON.stringify(f.command)} was emitted`)
      if (f.body.length > lim.maxBodyBytes) throw new Error(`a body of ${f.body.length} bytes passed the limit of ${lim.maxBodyBytes}`)
      if (Object.keys(f.headers).length > lim.maxHeaders) throw new Error(`${Object.keys(f.headers).length} headers passed the limit of ${lim.maxHeaders}`)
      if (!Buffer.isBuffer(f.body)) throw new Error('a body is not a Buffer')
    }
    const split = parse(input.bytes, input.splits, input.limits)
    // A frame over two limits may be refused for either, depending on how much of it had arrived.
    const sameOutcome = split.error === whole.error || (LIMITS.has(split.error) && LIMITS.has(whole.error))
    if (!sameOutcome) throw new Error(`chunk boundaries changed the outcome: ${whole.error ?? 'frames'} whole, ${split.error ?? 'frames'} split`)
    if (split.heartbeats !== whole.heartbeats) throw new Error(`chunk boundaries changed the heart-beats: ${whole.heartbeats} whole, ${split.heartbeats} split`)
    if (split.frames.length !== whole.frames.length) throw new Error(`chunk boundaries changed the frames: ${whole.frames.length} whole, ${split.frames.length} split`)
    for (let i = 0; i < whole.frames.length; i++) {
      const a = whole.frames[i]
      const b = split.frames[i]
      if (a.command !== b.command || !a.body.equals(b.body) || JSON.stringify(a.headers) !== JSON.stringify(b.headers)) throw new Error(`chunk boundaries changed frame ${i}`)
    }
    return whole.error ?? 'frames'
  }
}
