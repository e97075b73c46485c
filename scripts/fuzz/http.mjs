// Fuzz target: the balancer's request parsing, fed what a stranger on :8080 controls — the raw bytes
// of a connection. The server is Node's http server (llhttp) created with the options and the
// clientError answer of the balancer (src/balancer/balancer.ts); the request handler stands in for
// the forwarding (it reads the body as the balancer does and answers what it parsed), so the fuzzer
// measures the parser and the server around it, not the upstreams. Inputs are built by fast-check:
// valid requests (methods, targets, versions, header names and values, Content-Length and
// Transfer-Encoding in every combination, chunk sizes and extensions, obs-fold, NUL, bare CR and LF,
// oversized heads, pipelined requests), mutated byte-wise, or random bytes, written in pieces.
//
// The check: every input ends in answers and a close, or a clean close, within a deadline; the
// server never throws; what it writes is well-formed HTTP/1.1.
import fc from 'fast-check'
import { createServer } from 'node:http'
import { connect } from 'node:net'
import { Duplex } from 'node:stream'
import { mutate } from './stomp.mjs'

// ---- the server under test ----------------------------------------------------------------------

/**
 * The balancer's server options, as Balancer.start() sets them. src/balancer/balancer.ts does not
 * export them; when it does, import them from there instead of this copy.
 */
export const balancerServerOptions = (maxHeaderBytes = 16 * 1024) => ({
  maxHeaderSize: maxHeaderBytes,
  insecureHTTPParser: false,
  requestTimeout: 0,
  headersTimeout: 20_000,
  keepAliveTimeout: 5000,
})

/** The balancer's answer to a request the parser refused (its clientError handler). */
function onClientError(err, socket) {
  if (!socket.writable) return socket.destroy()
  const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request'
  socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`)
}

const RETRY_BODY_LIMIT = 64 * 1024
/** Bytes of a streamed body the stand-in reads before answering (the balancer would stream it upstream). */
const STREAM_LIMIT = 1024 * 1024

/**
 * A server configured as the balancer's. `stats` counts what the handlers saw; `errors` collects
 * anything thrown where nothing should be.
 */
export function balancerLikeServer(opts = {}) {
  const server = createServer(balancerServerOptions(opts.maxHeaderBytes))
  const stats = { requests: 0, upgrades: 0, aborted: 0 }
  const errors = []
  server.on('request', (req, res) => {
    stats.requests++
    void (async () => {
      // As Balancer.#handle: a known small length is read whole, anything else streamed.
      const length = Number(req.headers['content-length'] ?? 0)
      let bytes = 0
      if (req.headers['transfer-encoding'] !== undefined || length > 0) {
        for await (const chunk of req) {
          bytes += chunk.length
          if (bytes > Math.max(RETRY_BODY_LIMIT, STREAM_LIMIT)) break
        }
      }
      res.writeHead(200, { 'content-type': 'text/plain', 'x-body-bytes': String(bytes) })
      res.end(`${req.method} ${req.url.length}`)
    })().catch((err) => {
      // A client that leaves in the middle of a body: the request is aborted, which is no failure here.
      if (err?.code === 'ECONNRESET' || req.destroyed) stats.aborted++
      else errors.push(err)
      if (!res.headersSent && !res.destroyed) res.writeHead(502).end()
    })
  })
  // The balancer tunnels upgrades; with no upstream here, it answers as when no member is up.
  server.on('upgrade', (_req, socket) => {
    stats.upgrades++
    socket.on('error', () => undefined)
    socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
  })
  server.on('clientError', onClientError)
  return { server, stats, errors }
}

// ---- in-process connections -----------------------------------------------------------------------

/**
 * Two connected in-memory streams: what one writes the other reads, `end()` is a FIN, `destroy()` a
 * reset. The server side has the few socket methods Node's http server calls.
 */
export function socketPair() {
  let client, server
  const make = (peer) => {
    const d = new Duplex({
      allowHalfOpen: true,
      read() {},
      write(chunk, _enc, cb) {
        const p = peer()
        if (!p.destroyed) p.push(chunk)
        cb()
      },
      final(cb) {
        const p = peer()
        if (!p.destroyed) p.push(null)
        cb()
      },
      destroy(err, cb) {
        const p = peer()
        if (!p.destroyed) p.destroy()
        cb(err)
      },
    })
    d.remoteAddress = '127.0.0.1'
    d.remotePort = 40000
    d.remoteFamily = 'IPv4'
    d.setTimeout = () => d
    d.setNoDelay = () => d
    d.setKeepAlive = () => d
    d.ref = () => d
    d.unref = () => d
    d.address = () => ({ address: '127.0.0.1', family: 'IPv4', port: 8080 })
    return d
  }
  client = make(() => server)
  server = make(() => client)
  return { client, server }
}

// ---- inputs ---------------------------------------------------------------------------------------

const enc = (s) => Buffer.from(s, 'latin1')
const token = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}$/)

const METHODS = ['GET', 'POST', 'PUT', 'HEAD', 'OPTIONS', 'DELETE', 'PATCH', 'TRACE', 'CONNECT', 'PRI', 'PROPFIND', 'get', 'G ET', '']
const method = fc.oneof({ weight: 8, arbitrary: fc.constantFrom(...METHODS) }, { weight: 1, arbitrary: token })

const target = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('/', '/health/ready', '/stomp', '/api/x?y=1', '/a/../b', '*', 'http://127.0.0.1/x', '127.0.0.1:443', '/%00', '/\u00e9', '//x', '/a#b', '') },
  { weight: 2, arbitrary: fc.string({ maxLength: 40 }).map((s) => '/' + s) },
  { weight: 1, arbitrary: fc.integer({ min: 100, max: 20_000 }).map((n) => '/' + 'a'.repeat(n)) },
)

const version = fc.oneof({ weight: 10, arbitrary: fc.constant('HTTP/1.1') }, { weight: 1, arbitrary: fc.constantFrom('HTTP/1.0', 'HTTP/2.0', 'HTTP/0.9', 'HTTP/1.1 ', 'HTTP/1.10', 'http/1.1', 'HTTP/1', '') })

const lineEnd = fc.oneof({ weight: 12, arbitrary: fc.constant('\r\n') }, { weight: 1, arbitrary: fc.constantFrom('\n', '\r', '\r\r\n', '\n\r') })

const HEADER_NAMES = ['Host', 'Content-Length', 'Transfer-Encoding', 'Connection', 'Upgrade', 'Expect', 'Cookie', 'X-Forwarded-For', 'Forwarded', 'X-Real-IP', 'Sec-WebSocket-Key', 'Sec-WebSocket-Version', 'Origin', 'Keep-Alive', 'TE', 'Trailer', 'Proxy-Connection', 'Content-Type', 'Authorization']
const headerName = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(...HEADER_NAMES) },
  { weight: 2, arbitrary: token },
  { weight: 1, arbitrary: fc.constantFrom('Content-Length ', ' Host', 'Transfer-Encoding\u0000', 'Content\u00adLength', 'X:Y', '', 'Transfer_Encoding', 'content-length', 'TRANSFER-ENCODING') },
)

const headerValue = fc.oneof(
  { weight: 12, arbitrary: fc.string({ maxLength: 24 }).filter((s) => !/[\r\n]/.test(s)) },
  { weight: 3, arbitrary: fc.constantFrom('0', '5', '-1', '1e3', ' 5', '5 ', '5, 5', '0x10', '99999999999999999999', '+5', '05', 'chunked', 'Chunked', 'chunked, identity', 'gzip, chunked', 'identity', 'chunked\u000b', ' chunked', 'chunked;q=1', 'keep-alive', 'close', 'Upgrade', 'upgrade, keep-alive', 'websocket', '100-continue', '127.0.0.1', 'for=1.2.3.4') },
  { weight: 1, arbitrary: fc.constantFrom('a\u0000b', 'a\rb', 'a\nb', '\u00ff\u00fe', 'a\r\n b', 'a\r\n\tb') },
  { weight: 1, arbitrary: fc.integer({ min: 4 * 1024, max: 20 * 1024 }).map((n) => 'x'.repeat(n)) },
)

const separator = fc.oneof({ weight: 10, arbitrary: fc.constant(': ') }, { weight: 1, arbitrary: fc.constantFrom(':', ' : ', ':\t', ' :', '::', ': \t ') })

/** A chunked body: sizes true (or, when wild, false or absurd), with extensions, trailers and a proper or broken end. */
const chunked = (wild) =>
  fc
    .record({
      chunks: fc.array(
        fc.record({
          // A zero-length chunk ends the body: only wild bodies have one before the end.
          data: fc.string({ minLength: wild ? 0 : 1, maxLength: 40 }),
          size: wild
            ? fc.oneof({ weight: 8, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.constantFrom('ffffffffffffffff', '-1', '0x5', ' 5', '5 ', 'g', '', '00000000000000005', '1;a=b', '5;' + 'e'.repeat(300), 'FFFFFFFF') })
            : fc.constant(null),
          upper: fc.boolean(),
        }),
        { maxLength: 4 },
      ),
      trailer: wild ? fc.constantFrom('', '', 'X-T: 1\r\n', 'Content-Length: 5\r\n', 'bad trailer\r\n') : fc.constantFrom('', 'X-T: 1\r\n'),
      end: wild ? fc.constantFrom('0\r\n', '0\r\n', '0;ext\r\n', '', '0\n') : fc.constant('0\r\n'),
      eol: wild ? fc.constantFrom('\r\n', '\r\n', '\n') : fc.constant('\r\n'),
    })
    .map(({ chunks, trailer, end, eol }) => {
      let s = ''
      for (const c of chunks) {
        const n = Buffer.byteLength(c.data, 'latin1').toString(16)
        s += (c.size ?? (c.upper ? n.toUpperCase() : n)) + eol + c.data + eol
      }
      return s + end + trailer + (end ? eol : '')
    })

/** A header that parses: a token name, a printable value. */
const cleanHeader = fc.tuple(fc.oneof(fc.constantFrom('Accept', 'Cookie', 'Origin', 'User-Agent', 'X-Forwarded-For', 'Content-Type', 'Authorization'), token), fc.constant(': '), fc.string({ maxLength: 24 }).map((s) => s.replace(/[^\x21-\x7e]/g, 'x')), fc.constant('\r\n'))

/**
 * One request: line, headers (with the framing headers chosen together with the body), body.
 * `wild` requests draw every part from the odd choices too; the others parse, so the fuzzer also
 * reaches the handlers, bodies, pipelining and answers.
 */
export const request = (wild) =>
  fc
    .record({
      method: wild ? method : fc.constantFrom('GET', 'POST', 'PUT', 'HEAD', 'OPTIONS', 'DELETE', 'PATCH'),
      target: wild ? target : fc.constantFrom('/', '/health/ready', '/stomp', '/api/x?y=1', '/a/b%20c', '/x?' + 'q'.repeat(200)),
      version: wild ? version : fc.constantFrom('HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0'),
      lineEnd: wild ? lineEnd : fc.constant('\r\n'),
      headers: fc.array(wild ? fc.tuple(headerName, separator, headerValue, lineEnd) : cleanHeader, { maxLength: 8 }),
      manyHeaders: wild ? fc.oneof({ weight: 30, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 100, max: 2500 }) }) : fc.constant(0),
      obsFold: wild ? fc.oneof({ weight: 10, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.constantFrom('\r\n folded', '\r\n\tfolded', '\n folded') }) : fc.constant(null),
      framing: wild
        ? fc.constantFrom('none', 'length', 'chunked', 'both', 'both-reversed', 'two-lengths', 'length-short', 'length-long', 'te-twice', 'upgrade', 'expect', 'chunked-cut')
        : // A body cut short is a client that leaves in the middle of an upload.
          fc.constantFrom('none', 'none', 'length', 'length', 'chunked', 'upgrade', 'expect', 'length-short', 'chunked-cut'),
      body: fc.oneof({ weight: 20, arbitrary: fc.string({ maxLength: 64 }) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 128 * 1024 }).map((n) => 'b'.repeat(n)) }),
      chunked: chunked(wild),
      host: wild ? fc.oneof({ weight: 6, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }) : fc.constant(true),
    })
    .map((r) => {
      const eol = r.lineEnd
      let head = `${r.method} ${r.target} ${r.version}${eol}`
      if (r.host) head += `Host: 127.0.0.1:8080${eol}`
      for (const [name, sep, value, e] of r.headers) head += `${name}${sep}${value}${e}`
      if (r.obsFold) head += `X-Folded: start${r.obsFold}${eol}`
      for (let i = 0; i < r.manyHeaders; i++) head += `X-H${i}: v${eol}`
      const len = Buffer.byteLength(r.body, 'latin1')
      let body = ''
      switch (r.framing) {
        case 'length':
          head += `Content-Length: ${len}${eol}`
          body = r.body
          break
        case 'chunked':
          head += `Transfer-Encoding: chunked${eol}`
          body = r.chunked
          break
        case 'both':
          head += `Content-Length: ${len}${eol}Transfer-Encoding: chunked${eol}`
          body = r.chunked
          break
        case 'both-reversed':
          head += `Transfer-Encoding: chunked${eol}Content-Length: ${len}${eol}`
          body = r.body
          break
        case 'two-lengths':
          head += `Content-Length: ${len}${eol}Content-Length: ${len + 1}${eol}`
          body = r.body
          break
        case 'length-short':
          head += `Content-Length: ${len + 7}${eol}`
          body = r.body
          break
        case 'length-long':
          head += `Content-Length: ${Math.max(0, len - 3)}${eol}`
          body = r.body
          break
        case 'chunked-cut':
          head += `Transfer-Encoding: chunked${eol}`
          body = r.chunked.slice(0, -5)
          break
        case 'te-twice':
          head += `Transfer-Encoding: chunked${eol}Transfer-Encoding: chunked${eol}`
          body = r.chunked
          break
        case 'upgrade':
          head += `Connection: Upgrade${eol}Upgrade: websocket${eol}Sec-WebSocket-Version: 13${eol}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==${eol}`
          break
        case 'expect':
          head += `Expect: 100-continue${eol}Content-Length: ${len}${eol}`
          body = r.body
          break
      }
      return enc(head + eol + body)
    })

const requests = fc.array(fc.oneof({ weight: 2, arbitrary: request(false) }, { weight: 3, arbitrary: request(true) }), { minLength: 1, maxLength: 3 }).map((rs) => Buffer.concat(rs))

const mutation = fc.record({
  op: fc.constantFrom('flip', 'set', 'insert', 'delete', 'duplicate', 'truncate'),
  at: fc.double({ min: 0, max: 1, noNaN: true }),
  len: fc.integer({ min: 1, max: 64 }),
  byte: fc.oneof(fc.constantFrom(0x00, 0x0a, 0x0d, 0x20, 0x09, 0x3a, 0x2c, 0x3b, 0x7f, 0xff, 0x80), fc.integer({ min: 0, max: 255 })),
})

/** What one input is: the bytes, where the client splits its writes, and how it finishes. */
export const httpInput = fc.record({
  bytes: fc.oneof(
    { weight: 4, arbitrary: requests },
    { weight: 4, arbitrary: fc.tuple(requests, fc.array(mutation, { minLength: 1, maxLength: 6 })).map(([b, ms]) => mutate(b, ms)) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 512 }).map((b) => Buffer.from(b)) },
  ),
  splits: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 8 }),
  /** 'end': the client half-closes once it has written (and the server has had its say); 'reset': it resets. */
  finish: fc.oneof({ weight: 6, arbitrary: fc.constant('end') }, { weight: 1, arbitrary: fc.constant('reset') }),
})

export function describeHttpInput(input) {
  return { bytes: Buffer.from(input.bytes).toString('base64'), text: Buffer.from(input.bytes).subarray(0, 2000).toString('latin1'), splits: input.splits, finish: input.finish }
}

// ---- the check ------------------------------------------------------------------------------------

const STATUS_LINE = /^HTTP\/1\.1 [1-5]\d\d [^\r\n]*\r\n/

/**
 * Writes one input into a connection of `target` and waits until the server has closed its side,
 * within `deadlineMs`. `target.connection()` gives `{ client, done }` — an in-process pair or a
 * loopback socket. Returns the first status code answered (or 'closed' with no answer).
 */
export async function runHttpInput(target, input, deadlineMs) {
  const { client } = await target.connection()
  const out = []
  let closed = false
  const closedP = new Promise((resolve) => {
    client.on('data', (c) => out.push(c))
    client.on('error', () => undefined)
    client.on('end', () => {
      // The server ended its side: finish ours too (the client may still be writing), then it is over.
      client.end()
      resolve()
    })
    client.on('close', resolve)
  }).then(() => (closed = true))
  const bytes = input.bytes
  const cuts = [...new Set(input.splits.map((x) => Math.floor(x * bytes.length)))].sort((a, b) => a - b)
  let pos = 0
  for (const cut of [...cuts, bytes.length]) {
    if (cut <= pos || closed) continue
    client.write(bytes.subarray(pos, cut))
    pos = cut
    await new Promise((r) => setImmediate(r))
  }
  // Give the server the time to answer what it parsed before finishing (a FIN aborts requests in flight).
  await target.settle(client)
  if (!closed) {
    if (input.finish === 'reset') client.destroy()
    else client.end()
  }
  let timer
  const timedOut = new Promise((resolve) => (timer = setTimeout(() => resolve('timeout'), deadlineMs)))
  const outcome = await Promise.race([closedP, timedOut])
  clearTimeout(timer)
  if (outcome === 'timeout') {
    client.destroy()
    throw new Error(`the server neither answered nor closed within ${deadlineMs} ms after the client finished`)
  }
  const answer = Buffer.concat(out).toString('latin1')
  if (answer.length > 0 && !STATUS_LINE.test(answer)) throw new Error(`the server wrote something that is not an HTTP/1.1 answer: ${JSON.stringify(answer.slice(0, 80))}`)
  return answer.length > 0 ? answer.slice(9, 12) : 'closed'
}

/**
 * The in-process target: a balancer-like server fed through socket pairs. `settle` waits until the
 * handlers of this connection have answered (or a short while when a body never completes).
 */
export function inProcessTarget(opts = {}) {
  const { server, stats, errors } = balancerLikeServer(opts)
  return {
    stats,
    errors,
    async connection() {
      const { client, server: side } = socketPair()
      server.emit('connection', side)
      return { client }
    },
    async settle() {
      // A few turns of the event loop let the parser, the handlers and the answer run; a body that
      // never completes keeps its request open, and the FIN then aborts it.
      for (let i = 0; i < 4; i++) await new Promise((r) => setImmediate(r))
    },
    close() {
      server.closeAllConnections?.()
      server.close()
    },
  }
}

/**
 * The real balancer (dist/) in front of one upstream on 127.0.0.1, both in this process, reached
 * with real sockets: what the balancer-like server cannot show — forwarding, the upstream pool,
 * tunnels — and any error the balancer lets escape (an unhandled rejection ends the run).
 */
export async function balancerTarget({ Balancer }) {
  const { default: pino } = await import('pino')
  const upstream = createServer((req, res) => {
    let bytes = 0
    req.on('data', (c) => (bytes += c.length))
    req.on('end', () => res.end(`upstream ${req.method} ${bytes}`))
    req.on('error', () => undefined)
  })
  await new Promise((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  const watcher = { members: [{ id: 'fuzz-upstream', epoch: 1, url: `http://127.0.0.1:${upstream.address().port}`, status: 'up' }], onChange: () => () => undefined }
  const balancer = new Balancer(watcher, pino({ level: 'silent' }), { port: 0, secret: 'fuzz-secret-0123456789abcdef0123' })
  await balancer.start()
  return {
    stats: balancer.stats,
    errors: [],
    connection: () =>
      new Promise((resolve, reject) => {
        const client = connect(balancer.port, '127.0.0.1', () => resolve({ client }))
        client.once('error', reject)
      }),
    settle: () => new Promise((r) => setTimeout(r, 20)),
    async close() {
      await balancer.close()
      upstream.closeAllConnections?.()
      upstream.close()
    },
  }
}

/** The loopback target: the same server listening on 127.0.0.1, reached with real sockets. */
export async function loopbackTarget(opts = {}) {
  const { server, stats, errors } = balancerLikeServer(opts)
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = server.address().port
  return {
    stats,
    errors,
    connection: () =>
      new Promise((resolve, reject) => {
        const client = connect(port, '127.0.0.1', () => resolve({ client }))
        client.once('error', reject)
      }),
    settle: () => new Promise((r) => setTimeout(r, 5)),
    close() {
      server.closeAllConnections?.()
      server.close()
    },
  }
}
