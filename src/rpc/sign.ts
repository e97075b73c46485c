/**
 * Signatures of RPC requests and answers: HMAC-SHA256 with a key derived from the cluster secret,
 * over a canonical text of everything that matters — method, path, timestamp, nonce, sender,
 * receiver and the body's SHA-256. Answers are signed over the request's nonce, so an answer can
 * be neither forged nor replayed onto another request.
 *
 *   request:  CHORUS-RPC-1 \n POST \n <path> \n <timestamp ms> \n <nonce> \n <from> \n <to> \n <sha256(body) hex>
 *   answer:   CHORUS-RPC-1-ANSWER \n <status> \n <request nonce> \n <from> \n <sha256(body) hex>
 *
 * Sent as `x-chorus-signature: v1=<base64url>`, next to the `x-chorus-*` headers it covers.
 * Written here over node:crypto rather than with an HTTP-signature (RFC 9421) library: the
 * canonical text is a few lines, and those libraries bring far more than this needs.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import { randomChunk } from '../random.js'

export const HEADER_TIMESTAMP = 'x-chorus-timestamp'
export const HEADER_NONCE = 'x-chorus-nonce'
export const HEADER_FROM = 'x-chorus-from'
export const HEADER_TO = 'x-chorus-to'
export const HEADER_SIGNATURE = 'x-chorus-signature'

const VERSION = 'v1='
/** 16 random bytes, base64url. */
export const NONCE_PATTERN = /^[A-Za-z0-9_-]{22}$/
export const TIMESTAMP_PATTERN = /^\d{1,15}$/

export interface RequestFields {
  readonly method: string
  readonly path: string
  readonly timestamp: number
  readonly nonce: string
  readonly from: string
  readonly to: string
  readonly bodySha256: string
}

export interface AnswerFields {
  readonly status: number
  readonly nonce: string
  readonly from: string
  readonly bodySha256: string
}

/** The key used for RPC, derived so that it differs from the secret's other uses (cookies). */
export function rpcKey(secret: string): Buffer {
  return createHmac('sha256', secret).update('chorus rpc key 1').digest()
}

/** Hex SHA-256 of the bytes (a string is taken as its UTF-8 bytes, as it goes on the wire). */
export function sha256Hex(body: string | Uint8Array): string {
  return typeof body === 'string' ? createHash('sha256').update(body, 'utf8').digest('hex') : createHash('sha256').update(body).digest('hex')
}

export function newNonce(): string {
  return randomChunk(16).toString('base64url')
}

export function signRequest(key: Buffer, f: RequestFields): string {
  return mac(key, ['CHORUS-RPC-1', f.method, f.path, String(f.timestamp), f.nonce, f.from, f.to, f.bodySha256])
}

export function signAnswer(key: Buffer, f: AnswerFields): string {
  return mac(key, ['CHORUS-RPC-1-ANSWER', String(f.status), f.nonce, f.from, f.bodySha256])
}

/** Constant-time comparison of a received `x-chorus-signature` with the expected one. */
export function signatureMatches(received: string | undefined, expected: string): boolean {
  if (received === undefined) return false
  const a = Buffer.from(received)
  const b = Buffer.from(expected)
  return a.length === b.length && timingSafeEqual(a, b)
}

/** The headers of a signed request with `body`. */
export function requestHeaders(key: Buffer, p: { path: string; from: string; to: string; body: string | Uint8Array; timestamp?: number; nonce?: string }): Record<string, string> {
  const timestamp = p.timestamp ?? Date.now()
  const nonce = p.nonce ?? newNonce()
  const signature = signRequest(key, { method: 'POST', path: p.path, timestamp, nonce, from: p.from, to: p.to, bodySha256: sha256Hex(p.body) })
  return {
    'content-type': 'application/json',
    [HEADER_TIMESTAMP]: String(timestamp),
    [HEADER_NONCE]: nonce,
    [HEADER_FROM]: p.from,
    [HEADER_TO]: p.to,
    [HEADER_SIGNATURE]: signature,
  }
}

function mac(key: Buffer, fields: readonly string[]): string {
  // Fields are free of newlines (checked patterns, instance ids, URL paths), so the text is unambiguous.
  return VERSION + createHmac('sha256', key).update(fields.join('\n')).digest('base64url')
}
