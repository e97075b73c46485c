/**
 * The proxy core, the balancer's hot path: one HTTP request relayed to an upstream and its answer
 * streamed back. The body is read (up to `bodyBufferBytes`) before an instance is chosen, so a slow
 * client holds nothing upstream; a larger body streams over a connection of its own, closed after
 * the request. An idempotent request, or one that failed before a byte reached the upstream, is
 * retried once on another member; an upstream that refused or reset is ejected. Hop-by-hop headers
 * never cross; proxy headers are the balancer's own (forwarded.ts). Written by hand over undici's
 * dispatch interface: no maintained proxy library routes by membership with sticky pins.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Readable } from 'node:stream'
import { Client as UndiciClient, type Dispatcher } from 'undici'
import { toError } from '../errors.js'
import { signAffinity } from './affinity.js'
import { BodyStalledError, readBody, restOfBody } from './body.js'
import { type Client, PROXY_HEADERS, setProxyHeaders } from './forwarded.js'
import type { ResolvedBalancerOptions } from './options.js'
import { CONNECT_TIMEOUT_MS, type Upstream, type Upstreams } from './upstreams.js'

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

const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect', 'http2-settings'])
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE'])
const NOT_SENT = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'ENOTFOUND', 'EHOSTUNREACH'])

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
    let body: Buffer | Readable | null = null
    if (hasBody) {
      const start = await readBody(req, this.#opts.bodyBufferBytes, this.#opts.bodyTimeoutMs)
      if ('failed' in start) {
        if (start.failed === 'stalled') this.#stalled(res)
        return
      }
      body = start.whole ? Buffer.concat(start.chunks) : Readable.from(restOfBody(start.chunks, req, this.#opts.bodyTimeoutMs), { objectMode: false })
    }
    const replayable = body === null || Buffer.isBuffer(body)
    const tried = new Set<string>()
    for (let attempt = 0; attempt < 2; attempt++) {
      const choice = this.#upstreams.pick(req, tried)
      if (!choice) break
      const { up, pin } = choice
      tried.add(up.member.id)
      up.active++
      const state = { started: false }
      // A streamed body gets a connection of its own, closed after this request: whatever the
      // instance leaves unread of it stays on that connection.
      const own = replayable ? null : this.#ownConnection(up)
      try {
        await this.#forward(own ?? up.pool, up, req, res, method, headers, body, pin, state)
        return
      } catch (err) {
        if (err instanceof BodyStalledError) {
          if (!res.headersSent) this.#stalled(res)
          else res.destroy()
          return
        }
        const code = (err as NodeJS.ErrnoException).code ?? ''
        const causeCode = ((err as { cause?: NodeJS.ErrnoException }).cause?.code) ?? ''
        const notSent = NOT_SENT.has(code) || NOT_SENT.has(causeCode)
        if (notSent || code === 'UND_ERR_SOCKET' || code === 'ECONNRESET') this.#upstreams.eject(up, code || causeCode)
        if (res.destroyed && !state.started) return // the client left before an answer began: nothing to retry or answer
        const retry = !state.started && !res.headersSent && attempt === 0 && replayable && (IDEMPOTENT.has(method) || notSent)
        if (retry) {
          this.stats.retries++
          continue
        }
        this.stats.failures++
        if (!res.headersSent) {
          res.writeHead(502, { 'content-type': 'text/plain', connection: 'close' }).end('bad gateway: the instance failed to answer')
        } else {
          res.destroy(toError(err))
        }
        return
      } finally {
        up.active--
        if (own) void own.destroy().catch(() => undefined)
      }
    }
    this.stats.failures++
    if (!res.headersSent) res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '1', ...(req.complete ? {} : { connection: 'close' }) }).end('no instance available')
  }

  /** A connection to `up` outside its pool, for one request whose body streams. */
  #ownConnection(up: Upstream): UndiciClient {
    return new UndiciClient(up.origin, {
      pipelining: 1,
      headersTimeout: this.#opts.upstreamTimeoutMs,
      bodyTimeout: this.#opts.upstreamBodyTimeoutMs,
      connectTimeout: CONNECT_TIMEOUT_MS,
    })
  }

  #stalled(res: ServerResponse): void {
    this.stats.stalled++
    if (!res.destroyed) res.writeHead(408, { 'content-type': 'text/plain', connection: 'close' }).end('request timeout: the body stalled')
  }

  /**
   * Sends one request to `up` over `via` (its pool, or a connection of the request's own) and
   * streams its answer into `res` as it arrives (pausing the upstream while the client is slow, for
   * at most the send timeout). Rejects with the error; `state.started` tells whether the upstream
   * had begun answering, after which the request cannot be retried. A client that goes away aborts
   * the upstream request. The handler is undici's dispatch interface: no stream objects per request.
   */
  #forward(
    via: Dispatcher,
    up: Upstream,
    req: IncomingMessage,
    res: ServerResponse,
    method: string,
    headers: Record<string, string | string[]>,
    body: Buffer | Readable | null,
    pin: boolean,
    state: { started: boolean },
  ): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let controller: Dispatcher.DispatchController | null = null
      let settled = false
      let gone = false
      let sendTimer: NodeJS.Timeout | null = null
      const settle = (err?: Error) => {
        if (settled) return
        settled = true
        if (sendTimer) clearTimeout(sendTimer)
        res.off('close', onClientGone)
        if (err) reject(err)
        else resolve()
      }
      const clientGone = () => new Error('the client closed the connection')
      // The client may leave while the request still waits for a pooled connection: it is then
      // aborted as soon as it starts, so nothing waits on a client that is not there.
      const onClientGone = () => {
        gone = true
        controller?.abort(clientGone())
      }
      res.once('close', onClientGone)
      via.dispatch(
        { path: req.url ?? '/', method: method as Dispatcher.HttpMethod, headers, body },
        {
          onRequestStart: (c) => {
            controller = c
            if (gone) c.abort(clientGone())
          },
          onResponseStart: (c, statusCode, upHeaders) => {
            if (statusCode < 200) return // informational answers are not forwarded
            state.started = true
            try {
              const h: Record<string, string | string[]> = {}
              for (const k in upHeaders) {
                const v = upHeaders[k]
                if (v !== undefined && !HOP.has(k)) h[k] = v
              }
              if (pin) {
                const cookie = `${this.#opts.stickyCookie}=${signAffinity(this.#opts.secret, up.member.id)}; Path=/; HttpOnly; SameSite=Lax`
                const prior = h['set-cookie']
                h['set-cookie'] = prior ? [...(Array.isArray(prior) ? prior : [prior]), cookie] : cookie
              }
              // An answer before the whole body arrived (an early 413): the rest of the body is not
              // read, so the client's connection cannot carry another request.
              if (!req.complete) h.connection = 'close'
              res.writeHead(statusCode, h)
              this.stats.perUpstream[up.member.id] = (this.stats.perUpstream[up.member.id] ?? 0) + 1
            } catch (err) {
              c.abort(toError(err))
            }
          },
          onResponseData: (c, chunk) => {
            if (res.destroyed) c.abort(clientGone())
            else if (!res.write(chunk)) {
              c.pause()
              // A client that does not read its answer holds the upstream connection: bounded.
              sendTimer = setTimeout(() => res.destroy(), this.#opts.sendTimeoutMs)
              res.once('drain', () => {
                if (sendTimer) clearTimeout(sendTimer)
                sendTimer = null
                c.resume()
              })
            }
          },
          onResponseEnd: () => {
            res.end()
            settle()
          },
          onResponseError: (_c, err) => settle(err),
        },
      )
    })
  }
}
