/**
 * The calling side of RPC: signed POSTs over undici (one pooled agent, trusting `rpc.ca` when
 * set), a hard deadline per call, bounded answers, and answers accepted only when signed by the
 * instance that was called for this very request.
 */
import { Agent, request } from 'undici'
import { ChorusError, toError } from '../errors.js'
import { LinkedSignal } from '../util/abort.js'
import { HEADER_FROM, HEADER_SIGNATURE, newNonce, requestHeaders, sha256Hex, signAnswer, signatureMatches } from './sign.js'
import { isKnownCode } from './server.js'

export interface Target {
  readonly instanceId: string
  readonly url: string
}

export class RpcClient {
  readonly #key: Buffer
  readonly #path: string
  readonly #maxBodyBytes: number
  readonly #self: () => string
  readonly #agent: Agent

  constructor(p: { key: Buffer; path: string; maxBodyBytes: number; ca: string | null; self: () => string }) {
    this.#key = p.key
    this.#path = p.path
    this.#maxBodyBytes = p.maxBodyBytes
    this.#self = p.self
    this.#agent = new Agent({ connect: p.ca ? { ca: p.ca } : {}, keepAliveTimeout: 10_000, keepAliveMaxTimeout: 30_000 })
  }

  /**
   * Sends one call; resolves with the remote result or rejects with a typed error by the deadline.
   * `body` is the request's JSON text, already checked against the size limit.
   */
  async send(target: Target, method: string, body: string, timeoutMs: number, signal: AbortSignal | undefined): Promise<unknown> {
    let url: URL
    try {
      url = new URL(`${this.#path}/${method}`, target.url)
    } catch (err) {
      throw new ChorusError('CHORUS_ERR_RPC_UNREACHABLE', [target.instanceId, target.url, 'not a valid URL'], { cause: err })
    }
    const nonce = newNonce()
    const headers = requestHeaders(this.#key, { path: url.pathname, from: this.#self(), to: target.instanceId, body, nonce })
    const deadline = new AbortController()
    const timer = setTimeout(() => deadline.abort(timeout(method, target.instanceId, timeoutMs)), timeoutMs)
    const link = new LinkedSignal([deadline.signal, signal])
    const stop = link.signal
    try {
      const res = await request(url, {
        method: 'POST', headers, body, dispatcher: this.#agent, signal: stop,
      })
      const parts: Buffer[] = []
      let size = 0
      for await (const chunk of res.body) {
        size += (chunk as Buffer).byteLength
        if (size > this.#maxBodyBytes) {
          res.body.destroy()
          throw new ChorusError('CHORUS_ERR_RPC_BODY_TOO_LARGE', ['answer', `more than ${this.#maxBodyBytes}`, this.#maxBodyBytes], { details: { instanceId: target.instanceId } })
        }
        parts.push(chunk as Buffer)
      }
      const answer = Buffer.concat(parts, size)
      const from = single(res.headers[HEADER_FROM])
      const expected = signAnswer(this.#key, { status: res.statusCode, nonce, from: from ?? '', bodySha256: sha256Hex(answer) })
      if (!signatureMatches(single(res.headers[HEADER_SIGNATURE]), expected)) {
        throw badResponse(target, method, `HTTP ${res.statusCode} without a valid signature (is the RPC path served there, with the same secret?)`)
      }
      let parsed: { result?: unknown; error?: { code?: unknown; message?: unknown; details?: unknown } }
      try {
        parsed = JSON.parse(answer.toString('utf8')) as typeof parsed
      } catch {
        throw badResponse(target, method, 'the body is not JSON')
      }
      if (res.statusCode === 421) {
        throw new ChorusError('CHORUS_ERR_RPC_UNREACHABLE', [target.instanceId, url.origin, String(parsed.error?.message ?? 'another instance answered')], { details: { instanceId: target.instanceId } })
      }
      if (from !== target.instanceId) throw badResponse(target, method, `answered by ${JSON.stringify(from)}`)
      if (res.statusCode === 200 && parsed && typeof parsed === 'object' && 'result' in parsed) return parsed.result
      if (parsed && typeof parsed === 'object' && parsed.error && typeof parsed.error === 'object') throw remoteError(parsed.error, target.instanceId, method)
      throw badResponse(target, method, `HTTP ${res.statusCode} without a result`)
    } catch (err) {
      if (deadline.signal.aborted) throw deadline.signal.reason
      if (signal?.aborted) throw signal.reason
      if (err instanceof ChorusError) throw err
      const e = toError(err)
      throw new ChorusError('CHORUS_ERR_RPC_UNREACHABLE', [target.instanceId, url.origin, describeCause(e)], { cause: err, details: { instanceId: target.instanceId } })
    } finally {
      clearTimeout(timer)
      link.dispose()
    }
  }

  async close(): Promise<void> {
    await this.#agent.destroy().catch(() => undefined)
  }
}

export function timeout(method: string, instanceId: string, timeoutMs: number): ChorusError {
  return new ChorusError('CHORUS_ERR_RPC_TIMEOUT', [method, instanceId, timeoutMs], { details: { instanceId, timeoutMs } })
}

/** Rebuilds a handler's error: a code this instance knows keeps it; anything else is HANDLER_FAILED. */
export function remoteError(e: { code?: unknown; message?: unknown; details?: unknown }, instanceId: string, method: string): ChorusError {
  const details = e.details && typeof e.details === 'object' ? (e.details as Record<string, unknown>) : {}
  const message = typeof e.message === 'string' ? e.message : 'unknown error'
  if (isKnownCode(e.code) && e.code !== 'CHORUS_ERR_RPC_HANDLER_FAILED') {
    const err = new ChorusError(e.code, [], { details: { ...details, instanceId, remote: true } })
    err.message = message
    return err
  }
  const err = new ChorusError('CHORUS_ERR_RPC_HANDLER_FAILED', [method, instanceId, message], { details: { ...details, instanceId, remote: true } })
  if (e.code === 'CHORUS_ERR_RPC_HANDLER_FAILED') err.message = message
  return err
}

function badResponse(target: Target, method: string, why: string): ChorusError {
  return new ChorusError('CHORUS_ERR_RPC_BAD_RESPONSE', [target.instanceId, method, why], { details: { instanceId: target.instanceId } })
}

function describeCause(e: Error): string {
  const code = (e as { code?: unknown }).code
  const inner = e.cause instanceof Error ? `: ${e.cause.message}` : ''
  return `${typeof code === 'string' ? `${code} ` : ''}${e.message}${inner}`
}

function single(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v
}
