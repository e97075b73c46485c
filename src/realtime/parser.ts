/**
 * Streaming STOMP 1.2 frame parser. Written by hand because no maintained Node.js STOMP *server*
 * codec exists (client libraries parse server frames only). It is an explicit state machine in the
 * manner of ws's Receiver: bytes may arrive split at any boundary, every limit is checked before
 * memory is committed, and any violation is reported as a `StompParseError` — it never throws
 * anything else and never waits for bytes it will not accept.
 *
 * Rules kept: EOL is LF or CRLF; EOLs between frames are heart-beats; header escapes `\r \n \c \\`
 * are decoded (CONNECT/STOMP frames excepted), any other escape is an error; nothing is trimmed;
 * the first of repeated headers wins; with `content-length` the body may contain NULs and must be
 * followed by a NUL; without it the body ends at the first NUL.
 */
import { clientCommands, type ClientCommand, type Frame } from './frame.js'

export interface ParserLimits {
  /** Largest frame (command, headers and body), in bytes. Default 80 KiB. */
  maxFrameBytes: number
  /** Most headers in one frame. Default 64. */
  maxHeaders: number
  /** Longest command or header line, in bytes. Default 8 KiB. */
  maxHeaderLineBytes: number
  /** Largest body, in bytes. Default 64 KiB. */
  maxBodyBytes: number
}

export const defaultParserLimits: ParserLimits = Object.freeze({
  maxFrameBytes: 80 * 1024,
  maxHeaders: 64,
  maxHeaderLineBytes: 8 * 1024,
  maxBodyBytes: 64 * 1024,
})

export type ParseErrorKind = 'frame-too-large' | 'too-many-headers' | 'header-line-too-long' | 'body-too-large' | 'bad-escape' | 'bad-header' | 'unknown-command' | 'bad-content-length' | 'missing-nul'

export class StompParseError extends Error {
  override readonly name = 'StompParseError'
  readonly kind: ParseErrorKind
  constructor(kind: ParseErrorKind, message: string) {
    super(message)
    this.kind = kind
  }
}

/** Parser states, in the order a frame passes through them. */
const enum State {
  /** Between frames: EOLs here are heart-beats. */
  FRAME_START,
  COMMAND,
  HEADERS,
  /** Reading exactly `content-length` bytes. */
  BODY_LENGTH,
  /** Reading up to the first NUL. */
  BODY_NUL,
  /** After a `content-length` body: the NUL must follow. */
  FRAME_END,
}

const LF = 0x0a
const CR = 0x0d
const NUL = 0x00

export class StompParser {
  readonly #limits: ParserLimits
  readonly #onFrame: (frame: Frame) => void
  readonly #onHeartbeat: () => void
  #state: State = State.FRAME_START
  #buffer: Buffer = Buffer.alloc(0)
  #pos = 0
  #frameBytes = 0
  #command: ClientCommand | null = null
  #headers: Record<string, string> = Object.create(null) as Record<string, string>
  #headerCount = 0
  #bodyLength = 0
  #bodyParts: Buffer[] = []
  #bodyBytes = 0
  #failed = false

  constructor(onFrame: (frame: Frame) => void, opts: { limits?: Partial<ParserLimits>; onHeartbeat?: () => void } = {}) {
    this.#limits = { ...defaultParserLimits, ...opts.limits }
    this.#onFrame = onFrame
    this.#onHeartbeat = opts.onHeartbeat ?? (() => undefined)
  }

  /** Feeds bytes; calls `onFrame` for each complete frame. Throws `StompParseError` on bad input, after which the parser refuses more. */
  push(chunk: Buffer | string): void {
    if (this.#failed) throw new StompParseError('bad-header', 'the parser stopped after an earlier error')
    const data = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk
    this.#buffer = this.#pos < this.#buffer.length ? Buffer.concat([this.#buffer.subarray(this.#pos), data]) : data
    this.#pos = 0
    try {
      this.#run()
    } catch (err) {
      this.#failed = true
      throw err
    }
    if (this.#pos >= this.#buffer.length) {
      this.#buffer = Buffer.alloc(0)
      this.#pos = 0
    }
  }

  #run(): void {
    for (;;) {
      switch (this.#state) {
        case State.FRAME_START:
          if (!this.#frameStart()) return
          break
        case State.COMMAND:
          if (!this.#commandLine()) return
          break
        case State.HEADERS:
          if (!this.#headerLine()) return
          break
        case State.BODY_LENGTH:
          if (!this.#bodyByLength()) return
          break
        case State.BODY_NUL:
          if (!this.#bodyToNul()) return
          break
        case State.FRAME_END:
          if (!this.#frameEnd()) return
          break
        default: {
          const never: never = this.#state
          throw new Error(`unknown parser state ${String(never)}`)
        }
      }
    }
  }

  #frameStart(): boolean {
    const buf = this.#buffer
    while (this.#pos < buf.length) {
      const b = buf[this.#pos]!
      if (b === LF) {
        this.#pos++
        this.#onHeartbeat()
      } else if (b === CR) {
        if (this.#pos + 1 >= buf.length) return false
        if (buf[this.#pos + 1] !== LF) throw new StompParseError('bad-header', 'a CR must be followed by LF')
        this.#pos += 2
        this.#onHeartbeat()
      } else {
        this.#state = State.COMMAND
        this.#frameBytes = 0
        this.#command = null
        this.#headers = Object.create(null) as Record<string, string>
        this.#headerCount = 0
        this.#bodyParts = []
        this.#bodyBytes = 0
        return true
      }
    }
    return false
  }

  /** Returns the next line (without EOL) or null when it is not complete yet; enforces line and frame limits. */
  #line(): string | null {
    const buf = this.#buffer
    const lf = buf.indexOf(LF, this.#pos)
    const available = (lf < 0 ? buf.length : lf) - this.#pos
    if (available > this.#limits.maxHeaderLineBytes) {
      throw new StompParseError('header-line-too-long', `a line is longer than ${this.#limits.maxHeaderLineBytes} bytes`)
    }
    if (this.#frameBytes + available > this.#limits.maxFrameBytes) {
      throw new StompParseError('frame-too-large', `the frame is larger than ${this.#limits.maxFrameBytes} bytes`)
    }
    if (lf < 0) return null
    let end = lf
    if (end > this.#pos && buf[end - 1] === CR) end--
    const line = buf.toString('utf8', this.#pos, end)
    this.#frameBytes += lf + 1 - this.#pos
    this.#pos = lf + 1
    return line
  }

  #commandLine(): boolean {
    const line = this.#line()
    if (line === null) return false
    if (!clientCommands.has(line)) throw new StompParseError('unknown-command', `unknown command ${JSON.stringify(line.slice(0, 32))}`)
    this.#command = line as ClientCommand
    this.#state = State.HEADERS
    return true
  }

  #headerLine(): boolean {
    const line = this.#line()
    if (line === null) return false
    if (line === '') {
      const cl = this.#headers['content-length']
      if (cl !== undefined) {
        if (!/^\d{1,10}$/.test(cl)) throw new StompParseError('bad-content-length', `content-length ${JSON.stringify(cl.slice(0, 20))} is not a byte count`)
        this.#bodyLength = Number(cl)
        this.#checkBody(this.#bodyLength)
        this.#state = State.BODY_LENGTH
      } else {
        this.#state = State.BODY_NUL
      }
      return true
    }
    if (++this.#headerCount > this.#limits.maxHeaders) throw new StompParseError('too-many-headers', `more than ${this.#limits.maxHeaders} headers`)
    const colon = line.indexOf(':')
    if (colon <= 0) throw new StompParseError('bad-header', `header line without a name: ${JSON.stringify(line.slice(0, 32))}`)
    const raw = this.#command !== 'CONNECT' && this.#command !== 'STOMP'
    const name = raw ? unescape(line.slice(0, colon)) : line.slice(0, colon)
    const value = raw ? unescape(line.slice(colon + 1)) : line.slice(colon + 1)
    if (!(name in this.#headers)) this.#headers[name] = value
    return true
  }

  #checkBody(bytes: number): void {
    if (bytes > this.#limits.maxBodyBytes) throw new StompParseError('body-too-large', `the body is larger than ${this.#limits.maxBodyBytes} bytes`)
    if (this.#frameBytes + bytes > this.#limits.maxFrameBytes) throw new StompParseError('frame-too-large', `the frame is larger than ${this.#limits.maxFrameBytes} bytes`)
  }

  #bodyByLength(): boolean {
    const need = this.#bodyLength - this.#bodyBytes
    const take = Math.min(need, this.#buffer.length - this.#pos)
    if (take > 0) {
      this.#bodyParts.push(this.#buffer.subarray(this.#pos, this.#pos + take))
      this.#bodyBytes += take
      this.#pos += take
    }
    if (this.#bodyBytes < this.#bodyLength) return false
    this.#state = State.FRAME_END
    return true
  }

  #bodyToNul(): boolean {
    const buf = this.#buffer
    const nul = buf.indexOf(NUL, this.#pos)
    const end = nul < 0 ? buf.length : nul
    this.#checkBody(this.#bodyBytes + (end - this.#pos))
    if (end > this.#pos) {
      this.#bodyParts.push(buf.subarray(this.#pos, end))
      this.#bodyBytes += end - this.#pos
    }
    this.#pos = end
    if (nul < 0) return false
    this.#pos++
    this.#emit()
    return true
  }

  #frameEnd(): boolean {
    if (this.#pos >= this.#buffer.length) return false
    if (this.#buffer[this.#pos] !== NUL) throw new StompParseError('missing-nul', 'the body is not followed by a NUL byte')
    this.#pos++
    this.#emit()
    return true
  }

  #emit(): void {
    const body = this.#bodyParts.length === 1 ? Buffer.from(this.#bodyParts[0]!) : Buffer.concat(this.#bodyParts)
    const frame: Frame = { command: this.#command!, headers: this.#headers, body }
    this.#state = State.FRAME_START
    this.#bodyParts = []
    this.#onFrame(frame)
  }
}

function unescape(s: string): string {
  if (!s.includes('\\')) return s
  let out = ''
  for (let i = 0; i < s.length; i++) {
    const c = s[i]
    if (c !== '\\') {
      out += c
      continue
    }
    const n = s[++i]
    if (n === 'r') out += '\r'
    else if (n === 'n') out += '\n'
    else if (n === 'c') out += ':'
    else if (n === '\\') out += '\\'
    else throw new StompParseError('bad-escape', `undefined escape sequence \\${n ?? ''}`)
  }
  return out
}
