/**
 * Upgrades (WebSocket) through the balancer. The client's upgrade request goes to the instance
 * first; only its `101 Switching Protocols` opens a tunnel between the two sockets. Any other
 * answer is relayed to the client (its head, and a body of at most 64 KiB) and both connections are
 * closed, as is a handshake the instance does not answer in time: an upgrade that nobody serves
 * cannot hold a socket on either side.
 */
import { type ClientRequest, request as httpRequest, type IncomingMessage } from 'node:http'
import { request as httpsRequest } from 'node:https'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'

/** How long a connection refused outside any exchange may linger while its client reads the answer. */
const LINGER_MS = 2000
/** Largest body of a refused upgrade relayed to the client. */
const ANSWER_BODY_LIMIT = 64 * 1024
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'content-length', 'upgrade', 'trailer', 'te'])

/**
 * Answers a connection that has no HTTP exchange around it any more (an upgrade request, or a
 * client error) with a bare status and closes it.
 */
export function answerAndClose(socket: Duplex, status: string, opts: { discard?: boolean } = {}): void {
  closeWith(socket, `HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`, opts.discard !== false)
}

/**
 * Writes `answer` and ends the connection, making sure it closes: what the client still sends is
 * discarded (`discard`, for a socket no parser reads any more), so its close is seen, and the
 * socket is destroyed after a short linger whatever the client does.
 */
function closeWith(socket: Duplex, answer: string | Buffer, discard: boolean): void {
  socket.on('error', () => undefined)
  if (socket.writable) socket.end(answer)
  if (discard) socket.resume()
  setTimeout(() => socket.destroy(), LINGER_MS).unref()
}

export interface HandshakeTarget {
  readonly host: string
  readonly port: number
  readonly secure: boolean
}

export type Handshake =
  /** The instance switched protocols: the two sockets are piped, and both close together. */
  | { readonly kind: 'tunnel'; readonly upstream: Socket }
  /** The instance answered something else, which the client got; both connections are closed. */
  | { readonly kind: 'answered'; readonly status: number }
  /** Nothing reached the instance (refused, unreachable, connect timeout): another may be tried. */
  | { readonly kind: 'unreachable'; readonly code: string }
  /** The instance failed (timeout, broken answer) or the client left; the client has its 502 if it is still there. */
  | { readonly kind: 'failed'; readonly why: string }

const NOT_SENT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'CONNECT_TIMEOUT'])

/**
 * Sends the upgrade request `req` (its `head` held back until the switch) to `target` with
 * `headers`, and settles as described by Handshake. The client socket is not read meanwhile.
 */
export function handshake(
  client: Duplex,
  req: IncomingMessage,
  head: Buffer,
  target: HandshakeTarget,
  headers: Record<string, string | string[]>,
  opts: { connectTimeoutMs: number; answerTimeoutMs: number; maxHeaderBytes: number },
): Promise<Handshake> {
  return new Promise<Handshake>((resolve) => {
    let upReq: ClientRequest
    try {
      upReq = (target.secure ? httpsRequest : httpRequest)({
        host: target.host,
        port: target.port,
        method: req.method,
        path: req.url,
        headers: { ...headers, connection: 'Upgrade', upgrade: req.headers.upgrade ?? 'websocket' },
        agent: false,
        maxHeaderSize: opts.maxHeaderBytes,
        insecureHTTPParser: false,
      })
    } catch (err) {
      answerAndClose(client, '400 Bad Request')
      return resolve({ kind: 'failed', why: `the upgrade request cannot be relayed: ${(err as Error).message}` })
    }
    let settled = false
    let connected = false
    const settle = (outcome: Handshake) => {
      if (settled) return
      settled = true
      clearTimeout(connectTimer)
      clearTimeout(answerTimer)
      client.off('close', onClientClose)
      resolve(outcome)
    }
    const fail = (why: string) => {
      upReq.destroy()
      if (!client.destroyed) answerAndClose(client, '502 Bad Gateway')
      settle({ kind: 'failed', why })
    }
    const connectTimer = setTimeout(() => {
      upReq.destroy(Object.assign(new Error('connect timeout'), { code: 'CONNECT_TIMEOUT' }))
    }, opts.connectTimeoutMs)
    const answerTimer = setTimeout(() => fail('the instance did not answer the upgrade in time'), opts.answerTimeoutMs)
    upReq.once('socket', (s: Socket) => {
      if (!s.connecting) connected = true
      s.once(target.secure ? 'secureConnect' : 'connect', () => {
        connected = true
        clearTimeout(connectTimer)
      })
    })
    const onClientClose = () => {
      upReq.destroy()
      settle({ kind: 'failed', why: 'the client left during the handshake' })
    }
    client.once('close', onClientClose)

    upReq.once('upgrade', (res: IncomingMessage, upstream: Socket, upHead: Buffer) => {
      if (settled || client.destroyed) {
        upstream.destroy()
        return settle({ kind: 'failed', why: 'the client left during the handshake' })
      }
      let text = `HTTP/1.1 ${res.statusCode} ${res.statusMessage ?? ''}\r\n`
      for (let i = 0; i < res.rawHeaders.length; i += 2) text += `${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}\r\n`
      client.write(`${text}\r\n`)
      if (upHead.length) client.write(upHead)
      if (head.length) upstream.write(head)
      const done = () => {
        client.destroy()
        upstream.destroy()
      }
      for (const s of [client, upstream]) {
        s.once('close', done)
        s.on('error', done)
      }
      client.pipe(upstream).pipe(client)
      settle({ kind: 'tunnel', upstream })
    })

    upReq.once('response', (res: IncomingMessage) => {
      // Not a switch: relay the answer, with a bounded body, and close both sides.
      clearTimeout(connectTimer)
      const chunks: Buffer[] = []
      let size = 0
      res.on('data', (c: Buffer) => {
        size += c.length
        if (size > ANSWER_BODY_LIMIT) return fail(`the instance's answer to the upgrade is over ${ANSWER_BODY_LIMIT} bytes`)
        chunks.push(c)
      })
      res.on('error', () => fail('the instance broke off its answer to the upgrade'))
      res.once('end', () => {
        if (settled) return
        const body = Buffer.concat(chunks)
        let text = `HTTP/1.1 ${res.statusCode} ${res.statusMessage ?? ''}\r\n`
        for (let i = 0; i < res.rawHeaders.length; i += 2) {
          if (!HOP.has(res.rawHeaders[i]!.toLowerCase())) text += `${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}\r\n`
        }
        closeWith(client, Buffer.concat([Buffer.from(`${text}Content-Length: ${body.length}\r\nConnection: close\r\n\r\n`, 'latin1'), body]), true)
        upReq.destroy()
        settle({ kind: 'answered', status: res.statusCode ?? 0 })
      })
    })

    upReq.on('error', (err: NodeJS.ErrnoException) => {
      if (settled) return
      const code = err.code ?? 'error'
      if (!connected && NOT_SENT.has(code)) {
        upReq.destroy()
        return settle({ kind: 'unreachable', code })
      }
      fail(`upgrade to the instance failed: ${err.message}`)
    })
    upReq.end()
  })
}
