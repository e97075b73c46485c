/**
 * Small HTTP helpers of the dashboard server: bounded body reading, JSON answers, typed errors as
 * `{ error: { code, message } }` with the catalog's status, and the security headers every answer
 * carries. node:http is enough for a handful of routes; a framework would be the larger dependency.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { ChorusError, toError } from '../errors.js'

export const MAX_BODY_BYTES = 64 * 1024

export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'same-origin',
  'content-security-policy': "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}

export function send(res: ServerResponse, status: number, body: string | Buffer, contentType: string, headers: Record<string, string | string[]> = {}): void {
  if (res.headersSent) {
    res.end()
    return
  }
  res.writeHead(status, { ...SECURITY_HEADERS, 'content-type': contentType, 'cache-control': 'no-store', ...headers })
  res.end(res.req.method === 'HEAD' ? undefined : body)
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string | string[]> = {}): void {
  send(res, status, JSON.stringify(body), 'application/json; charset=utf-8', headers)
}

/** Answers a ChorusError with its catalog status (other errors: 500, logged by the caller). */
export function sendError(res: ServerResponse, err: unknown, headers: Record<string, string | string[]> = {}): void {
  const e = err instanceof ChorusError ? err : new ChorusError('CHORUS_ERR_DASHBOARD_BAD_REQUEST', ['internal error'])
  const status = err instanceof ChorusError ? (err.status ?? 500) : 500
  const extra: Record<string, string | string[]> = { ...headers }
  if (e.code === 'CHORUS_ERR_DASHBOARD_THROTTLED' && typeof e.details.retryAfterSec === 'number') extra['retry-after'] = String(e.details.retryAfterSec)
  sendJson(res, status, { error: { code: e.code, message: status === 500 && !(err instanceof ChorusError) ? toError(err).message : e.message } }, extra)
}

/** Reads the whole body, refusing more than `limit` bytes. */
export function readBody(req: IncomingMessage, limit = MAX_BODY_BYTES): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0)
    if (declared > limit) {
      req.resume()
      reject(new ChorusError('CHORUS_ERR_DASHBOARD_BODY_TOO_LARGE', [limit]))
      return
    }
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (c: Buffer) => {
      size += c.length
      if (size > limit) {
        req.removeAllListeners('data')
        req.resume()
        reject(new ChorusError('CHORUS_ERR_DASHBOARD_BODY_TOO_LARGE', [limit]))
        return
      }
      chunks.push(c)
    })
    req.once('end', () => resolve(Buffer.concat(chunks)))
    req.once('error', reject)
  })
}

export function parseJson(buf: Buffer): unknown {
  try {
    return JSON.parse(buf.toString('utf8'))
  } catch {
    throw new ChorusError('CHORUS_ERR_DASHBOARD_BAD_REQUEST', ['the body is not valid JSON'])
  }
}

/** The client's address as the socket sees it (no proxy header is trusted). */
export function clientAddress(req: IncomingMessage): string {
  return req.socket.remoteAddress ?? 'unknown'
}

/** The media type of the request body, lowercased, without parameters. */
export function mediaType(req: IncomingMessage): string {
  return (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase()
}

/** A URL path segment, decoded; malformed percent-encoding is a 400. */
export function decodeSegment(s: string): string {
  try {
    return decodeURIComponent(s)
  } catch {
    throw new ChorusError('CHORUS_ERR_DASHBOARD_BAD_REQUEST', ['malformed percent-encoding in the path'])
  }
}

/** The 405 answer for `method` on `path`. */
export function notAllowed(method: string, path: string): ChorusError {
  return new ChorusError('CHORUS_ERR_DASHBOARD_METHOD_NOT_ALLOWED', [method, path])
}
