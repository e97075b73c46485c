/**
 * Sticky sessions: a signed affinity cookie naming the instance a client is pinned to. The
 * signature (HMAC-SHA256 with the cluster secret) keeps clients from pinning themselves to an
 * arbitrary instance id; a pin to an instance that is gone is simply replaced.
 */
import { createHmac, timingSafeEqual } from 'node:crypto'

export function signAffinity(secret: string, instanceId: string): string {
  return `${encodeURIComponent(instanceId)}.${mac(secret, instanceId)}`
}

export function readAffinity(secret: string, cookieHeader: string | undefined, name: string): string | null {
  if (!cookieHeader) return null
  for (const part of cookieHeader.split(';')) {
    const eq = part.indexOf('=')
    if (eq < 0 || part.slice(0, eq).trim() !== name) continue
    const value = part.slice(eq + 1).trim()
    const dot = value.lastIndexOf('.')
    if (dot <= 0) return null
    let id: string
    try {
      id = decodeURIComponent(value.slice(0, dot))
    } catch {
      return null
    }
    const given = Buffer.from(value.slice(dot + 1))
    const expected = Buffer.from(mac(secret, id))
    return given.length === expected.length && timingSafeEqual(given, expected) ? id : null
  }
  return null
}

function mac(secret: string, id: string): string {
  return createHmac('sha256', secret).update(`affinity:${id}`).digest('base64url').slice(0, 22)
}
