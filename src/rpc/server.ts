/**
 * The receiving side of RPC: one function that serves `POST <rpc.path>/<method>` on Node's
 * IncomingMessage/ServerResponse, whatever server or framework delivers them. Checks run in this
 * order, each refusing before any handler runs: headers and timestamp window (401), body size
 * (413), signature (401), receiver (421), nonce replay (401), method (404), JSON (400). Every
 * answer is signed over the request's nonce.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import { ChorusError, catalog, toError, type ErrorCode } from '../errors.js'
import type { ClusterEvents, Events } from '../events.js'
import { LinkedSignal } from '../util/abort.js'
import { NonceStore } from './nonces.js'
import {
  HEADER_FROM, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, HEADER_TO, NONCE_PATTERN, TIMESTAMP_PATTERN, sha256Hex, signAnswer,
  signRequest, signatureMatches,
} from './sign.js'

/** What a handler learns about the call besides its payload. */
export interface RpcContext {
  /** The calling instance (authenticated by the signature). */
  readonly from: string
  readonly method: string
  /** Aborted when the caller goes away (its deadline passed) or this instance closes. */
  readonly signal: AbortSignal
}

export type RpcHandler<P = unknown, R = unknown> = (payload: P, ctx: RpcContext) => R | Promise<R>

export const METHOD_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/

export interface ServerDeps {
  readonly key: Buffer
  readonly instanceId: () => string
  readonly path: string
  readonly maxBodyBytes: number
  readonly windowMs: number
  readonly maxNonces: number
  readonly handlers: ReadonlyMap<string, RpcHandler>
  readonly events: Events
  readonly log: Logger
  /** Aborted when the subsystem closes. */
  readonly closing: AbortSignal
}

type Refusal = ClusterEvents['rpc:request:refused']['reason']

export class RpcServer {
  readonly #d: ServerDeps
  readonly #prefix: string
  readonly #nonces: NonceStore

  constructor(deps: ServerDeps) {
    this.#d = deps
    this.#prefix = `${deps.path}/`
    this.#nonces = new NonceStore(deps.windowMs, deps.maxNonces)
  }

  /** True when the request is addressed to the RPC path (and must not reach the application). */
  matches(req: IncomingMessage): boolean {
    return typeof req.url === 'string' && req.url.startsWith(this.#prefix)
  }

  /** Serves one request that `matches`. Never rejects. */
  async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const nonceHeader = single(req.headers[HEADER_NONCE])
    const nonce = nonceHeader !== undefined && NONCE_PATTERN.test(nonceHeader) ? nonceHeader : ''
    const answer = (status: number, body: unknown) => this.#answer(req, res, nonce, status, body)
    const fail = (code: ErrorCode, args: unknown[], status?: number) => {
      const err = new ChorusError(code, args)
      return answer(status ?? err.status ?? 500, { error: { code, message: err.message } })
    }
    const method = req.url!.slice(this.#prefix.length)
    try {
      if (!METHOD_PATTERN.test(method)) return fail('CHORUS_ERR_RPC_METHOD_NOT_FOUND', [method.slice(0, 140), this.#d.instanceId()])
      if (req.method !== 'POST') {
        res.setHeader('allow', 'POST')
        return answer(405, { error: { code: 'CHORUS_ERR_RPC_METHOD_NOT_FOUND', message: 'RPC requests are POST' } })
      }
      const from = single(req.headers[HEADER_FROM])
      const to = single(req.headers[HEADER_TO])
      const stamp = single(req.headers[HEADER_TIMESTAMP])
      const signature = single(req.headers[HEADER_SIGNATURE])
      const refuse = (reason: Refusal, why: string) => {
        this.#d.events.emit('rpc:request:refused', { reason, from: from ?? null, method })
        return fail('CHORUS_ERR_RPC_UNAUTHORIZED', [why])
      }
      if (!from || !to || !stamp || !signature || !nonce || !TIMESTAMP_PATTERN.test(stamp)) return refuse('unsigned', 'missing or malformed x-chorus-* headers')
      const timestamp = Number(stamp)
      const now = Date.now()
      if (Math.abs(now - timestamp) > this.#d.windowMs) return refuse('stale', `timestamp outside the window of ±${this.#d.windowMs} ms`)
      const declared = Number(single(req.headers['content-length']) ?? NaN)
      if (declared > this.#d.maxBodyBytes) {
        this.#d.events.emit('rpc:request:refused', { reason: 'too-large', from, method })
        return fail('CHORUS_ERR_RPC_BODY_TOO_LARGE', ['request', declared, this.#d.maxBodyBytes])
      }
      const body = await readBody(req, this.#d.maxBodyBytes)
      if (body === null) {
        this.#d.events.emit('rpc:request:refused', { reason: 'too-large', from, method })
        return fail('CHORUS_ERR_RPC_BODY_TOO_LARGE', ['request', `more than ${this.#d.maxBodyBytes}`, this.#d.maxBodyBytes])
      }
      const expected = signRequest(this.#d.key, { method: 'POST', path: req.url!, timestamp, nonce, from, to, bodySha256: sha256Hex(body) })
      if (!signatureMatches(signature, expected)) return refuse('signature', 'bad signature')
      const self = this.#d.instanceId()
      if (to !== self) {
        this.#d.events.emit('rpc:request:refused', { reason: 'misdirected', from, method })
        return answer(421, { error: { code: 'CHORUS_ERR_RPC_UNREACHABLE', message: `this is ${self}, not ${to}` } })
      }
      const verdict = this.#nonces.check(nonce, timestamp, now)
      if (verdict !== 'ok') return refuse(verdict === 'replay' ? 'replay' : 'stale', verdict === 'replay' ? 'nonce already used (replay)' : 'older than requests already forgotten')
      const handler = this.#d.handlers.get(method)
      if (!handler) return fail('CHORUS_ERR_RPC_METHOD_NOT_FOUND', [method, self])
      if (this.#d.closing.aborted) return fail('CHORUS_ERR_CLUSTER_CLOSED', ['closing', 'serving RPC'])
      let payload: unknown
      try {
        payload = body.byteLength === 0 ? null : JSON.parse(body.toString('utf8'))
      } catch (err) {
        return fail('CHORUS_ERR_RPC_PAYLOAD_INVALID', ['request body', toError(err).message])
      }
      const stop = new LinkedSignal([this.#d.closing])
      const onClose = () => {
        if (!res.writableFinished) stop.abort(new ChorusError('CHORUS_ERR_RPC_TIMEOUT', [method, 'the caller', 'its']))
      }
      res.once('close', onClose)
      try {
        const result = await handler(payload, { from, method, signal: stop.signal })
        return answer(200, { result: result === undefined ? null : result })
      } catch (err) {
        return answer(...handlerFailure(err, method, self))
      } finally {
        res.off('close', onClose)
        stop.dispose()
      }
    } catch (err) {
      this.#d.log.warn({ err: toError(err), method }, 'RPC request failed')
      if (!res.headersSent) answer(500, { error: { code: 'CHORUS_ERR_RPC_HANDLER_FAILED', message: toError(err).message } })
      else res.destroy()
    }
  }

  #answer(req: IncomingMessage, res: ServerResponse, nonce: string, status: number, value: unknown): void {
    if (res.headersSent || res.destroyed) return
    let text: string
    try {
      text = JSON.stringify(value)
    } catch (err) {
      status = 500
      text = JSON.stringify({ error: { code: 'CHORUS_ERR_RPC_PAYLOAD_INVALID', message: new ChorusError('CHORUS_ERR_RPC_PAYLOAD_INVALID', ['result', toError(err).message]).message } })
    }
    let body = Buffer.from(text)
    if (body.byteLength > this.#d.maxBodyBytes) {
      status = 413
      const err = new ChorusError('CHORUS_ERR_RPC_BODY_TOO_LARGE', ['answer', body.byteLength, this.#d.maxBodyBytes])
      body = Buffer.from(JSON.stringify({ error: { code: err.code, message: err.message } }))
    }
    const self = this.#d.instanceId()
    res.statusCode = status
    res.setHeader('content-type', 'application/json')
    res.setHeader('content-length', body.byteLength)
    res.setHeader(HEADER_FROM, self)
    res.setHeader(HEADER_SIGNATURE, signAnswer(this.#d.key, { status, nonce, from: self, bodySha256: sha256Hex(body) }))
    // A request body left unread (refused early) cannot share the connection with the next request.
    if (!req.complete) res.setHeader('connection', 'close')
    res.end(body)
  }
}

/** Status and body for a handler's failure: a ChorusError keeps its code; anything else is HANDLER_FAILED. */
function handlerFailure(err: unknown, method: string, self: string): [number, unknown] {
  if (err instanceof ChorusError) {
    return [err.status ?? 500, { error: { code: err.code, message: err.message, details: safeDetails(err.details) } }]
  }
  const e = toError(err)
  const remoteCode = (e as { code?: unknown }).code
  const wrapped = new ChorusError('CHORUS_ERR_RPC_HANDLER_FAILED', [method, self, e.message])
  return [500, { error: { code: wrapped.code, message: wrapped.message, details: typeof remoteCode === 'string' ? { remoteCode } : {} } }]
}

function safeDetails(details: Readonly<Record<string, unknown>>): Record<string, unknown> {
  try {
    return JSON.parse(JSON.stringify(details)) as Record<string, unknown>
  } catch {
    return {}
  }
}

/** The whole body, or `null` as soon as it passes `max` bytes (the rest is not read). */
function readBody(req: IncomingMessage, max: number): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = []
    let size = 0
    const onData = (chunk: Buffer) => {
      size += chunk.byteLength
      if (size > max) {
        cleanup()
        req.pause()
        resolve(null)
        return
      }
      parts.push(chunk)
    }
    const onEnd = () => {
      cleanup()
      resolve(Buffer.concat(parts, size))
    }
    const onError = (err: Error) => {
      cleanup()
      reject(err)
    }
    const cleanup = () => {
      req.off('data', onData)
      req.off('end', onEnd)
      req.off('error', onError)
    }
    req.on('data', onData)
    req.on('end', onEnd)
    req.on('error', onError)
  })
}

function single(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v
}

/** True for codes of the catalog (a remote error's code is trusted only if this instance knows it). */
export function isKnownCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(catalog, code)
}
