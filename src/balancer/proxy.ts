/**
 * The proxy core, the balancer's hot path: one HTTP request relayed to an upstream and its answer
 * streamed back (relay.ts, over the upstream's pool of keep-alive sockets, upstream-pool.ts). The
 * body is read (up to `bodyBufferBytes`) before an instance is chosen, so a slow client holds
 * nothing upstream; a larger body streams over a connection of its own, closed after the request.
 * An idempotent request, or one that failed before a byte reached the upstream, is retried once on
 * another member; an upstream that refused or reset is ejected. Hop-by-hop headers never cross;
 * proxy headers are the balancer's own (forwarded.ts). The request head is serialized once, here.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { BodyStalledError, readBody, restOfBody } from './body.js'
import { type Client, PROXY_HEADERS, setProxyHeaders } from './forwarded.js'
import type { ResolvedBalancerOptions } from './options.js'
import { Exchange, HOP } from './relay.js'
import { UpstreamError } from './upstream-conn.js'
import type { Upstreams } from './upstreams.js'

export interface BalancerStats {
  requests: number
  retries: number
  failures: number
  upgrades: number
  /** Requests and handshakes refused with 429: their address had too many in flight. */
  limited: number
  /** Requests refused with 408: the client stalled in its body. */
  stalled: number
  perUpstream: Record<string, number>
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE'])
/** Methods whose request says its (empty) length even without a body. */
const PAYLOAD = new Set(['POST', 'PUT', 'PATCH'])

export class ProxyCore {
  readonly #opts: ResolvedBalancerOptions
  readonly #upstreams: Upstreams
  readonly stats: BalancerStats

  constructor(opts: ResolvedBalancerOptions, upstreams: Upstreams, stats: BalancerStats) {
    this.#opts = opts
    this.#upstreams = upstreams
    this.stats = stats
  }

  /** The request's headers as sent upstream: end-to-end ones only, with the balancer's proxy headers. */
  forwardHeaders(req: IncomingMessage, client: Client): Record<string, string | string[]> {
    const out: Record<string, string | string[]> = {}
    // Headers named in Connection are hop-by-hop too; the usual `keep-alive` names only one already in HOP.
    const connection = req.headers.connection
    const connectionTokens = connection === undefined || connection === 'keep-alive' ? null : new Set(connection.toLowerCase().split(',').map((t) => t.trim()))
    for (const name in req.headers) {
      const value = req.headers[name]
      if (value === undefined || HOP.has(name) || PROXY_HEADERS.has(name) || connectionTokens?.has(name)) continue
      out[name] = value
    }
    setProxyHeaders(out, req, client, (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http')
    return out
  }

  /** Relays one request (see the file's comment); answers 502/503/408 itself when it must. */
  async proxy(req: IncomingMessage, res: ServerResponse, client: Client): Promise<void> {
    const method = req.method ?? 'GET'
    const headers = this.forwardHeaders(req, client)
    const hasBody = req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0
    // The body is read (up to the buffer limit) before an instance is chosen: a slow client holds
    // nothing upstream while it sends.
    let body: Buffer | AsyncIterable<Buffer> | null = null
    if (hasBody) {
      const start = await readBody(req, this.#opts.bodyBufferBytes, this.#opts.bodyTimeoutMs)
      if ('failed' in start) {
        if (start.failed === 'stalled') this.#stalled(res)
        return
      }
      body = start.whole ? (start.chunks.length === 1 ? start.chunks[0]! : Buffer.concat(start.chunks)) : restOfBody(start.chunks, req, this.#opts.bodyTimeoutMs)
    }
    const replayable = body === null || Buffer.isBuffer(body)
    // A streamed body keeps the client's length when it gave one, else goes chunked.
    const chunked = !replayable && req.headers['content-length'] === undefined
    const framing =
      body === null
        ? PAYLOAD.has(method) ? 'content-length: 0\r\n' : ''
        : Buffer.isBuffer(body)
          ? `content-length: ${body.length}\r\n`
          : chunked ? 'transfer-encoding: chunked\r\n' : `content-length: ${req.headers['content-length']}\r\n`
    const head = requestHead(method, req.url ?? '/', headers) + framing
    let tried: string | null = null
    for (let attempt = 0; attempt < 2; attempt++) {
      const choice = this.#upstreams.pick(req, tried === null ? null : new Set([tried]))
      if (!choice) break
      const { up, pin } = choice
      tried = up.member.id
      up.active++
      // A request without Host (HTTP/1.0) gets the instance's.
      const host = headers.host === undefined ? `host: ${new URL(up.origin).host}\r\n` : ''
      const exchange = new Exchange(this.#opts, this.stats, { up, req, res, head: `${head}${host}\r\n`, body, chunked, headOnly: method === 'HEAD', pin })
      try {
        await exchange.run()
        return
      } catch (err) {
        if (err instanceof BodyStalledError) {
          if (!res.headersSent) this.#stalled(res)
          else res.destroy()
          return
        }
        if (!(err instanceof UpstreamError)) {
          // The client left (or broke off its body): nothing to retry or answer.
          if (!res.destroyed) res.destroy()
          return
        }
        if (err.eject) this.#upstreams.eject(up, err.code)
        const retry = !exchange.started && !res.headersSent && attempt === 0 && replayable && (IDEMPOTENT.has(method) || err.notSent)
        if (retry) {
          this.stats.retries++
          continue
        }
        this.stats.failures++
        if (!res.headersSent) {
          res.writeHead(502, { 'content-type': 'text/plain', connection: 'close' }).end('bad gateway: the instance failed to answer')
        } else {
          res.destroy(err)
        }
        return
      } finally {
        up.active--
      }
    }
    this.stats.failures++
    if (!res.headersSent) res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '1', ...(req.complete ? {} : { connection: 'close' }) }).end('no instance available')
  }

  #stalled(res: ServerResponse): void {
    this.stats.stalled++
    if (!res.destroyed) res.writeHead(408, { 'content-type': 'text/plain', connection: 'close' }).end('request timeout: the body stalled')
  }
}

/** The request line and forwarded headers, as sent upstream (without framing, Host supplied, or the final empty line). */
function requestHead(method: string, url: string, headers: Record<string, string | string[]>): string {
  let text = `${method} ${url} HTTP/1.1\r\n`
  for (const name in headers) {
    if (name === 'content-length') continue // the framing is the balancer's
    const value = headers[name]!
    if (typeof value === 'string') text += `${name}: ${value}\r\n`
    else for (const v of value) text += `${name}: ${v}\r\n`
  }
  return text
}
