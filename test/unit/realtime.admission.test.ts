import type { IncomingMessage } from 'node:http'
import { describe, expect, it } from 'vitest'
import { clientAddress, ConnectionCounts, originCheck, trustedProxies } from '../../src/realtime/admission.js'

const req = (headers: Record<string, string>, remoteAddress = '127.0.0.1') => ({ headers, socket: { remoteAddress } }) as unknown as IncomingMessage

describe('the origin rule of the gateway', () => {
  const own = originCheck(undefined)

  it('admits the page of the host the request was sent to, port included, whatever the scheme', () => {
    for (const [origin, host] of [
      ['http://app.example.com', 'app.example.com'],
      ['https://app.example.com', 'app.example.com'],
      ['https://app.example.com', 'app.example.com:443'],
      ['http://App.Example.com:8080', 'app.example.com:8080'],
      ['http://127.0.0.1:8080', '127.0.0.1:8080'],
      ['http://[::1]:8080', '[::1]:8080'],
    ] as const) {
      expect(own(req({ origin, host })), `${origin} on ${host}`).toEqual({ ok: true })
    }
  })

  it('refuses other hosts, other ports, opaque and unparsable origins; admits requests without Origin', () => {
    for (const [origin, host] of [
      ['https://evil.example', 'app.example.com'],
      ['http://app.example.com:9999', 'app.example.com'],
      ['http://app.example.com', 'app.example.com:8080'],
      ['http://app.example.com.evil.example', 'app.example.com'],
      ['null', 'app.example.com'],
      ['not a url', 'app.example.com'],
      ['http://app.example.com', 'user@app.example.com'],
    ] as const) {
      expect(own(req({ origin, host })).ok, `${origin} on ${host}`).toBe(false)
    }
    expect(own(req({ origin: 'http://app.example.com' })).ok).toBe(false)
    expect(own(req({ host: 'app.example.com' }))).toEqual({ ok: true })
  })

  it('admits listed origins exactly, or any with "*"', () => {
    const listed = originCheck(['https://app.example.com', 'null'])
    expect(listed(req({ origin: 'https://app.example.com', host: 'api.example.com' })).ok).toBe(true)
    expect(listed(req({ origin: 'http://app.example.com', host: 'api.example.com' })).ok).toBe(false)
    expect(listed(req({ origin: 'null', host: 'api.example.com' })).ok).toBe(true)
    expect(originCheck('*')(req({ origin: 'https://evil.example', host: 'a' })).ok).toBe(true)
  })
})

describe('the client address and the connection counts', () => {
  it('believes X-Forwarded-For only from a trusted proxy, and only its last untrusted hop', () => {
    const trusted = trustedProxies(['127.0.0.1', '10.0.0.2'])
    expect(clientAddress(req({ 'x-forwarded-for': '203.0.113.9' }, '198.51.100.1'), trusted)).toBe('198.51.100.1')
    expect(clientAddress(req({ 'x-forwarded-for': '1.1.1.1, 203.0.113.9' }, '::ffff:127.0.0.1'), trusted)).toBe('203.0.113.9')
    expect(clientAddress(req({ 'x-forwarded-for': '203.0.113.9, 10.0.0.2' }, '127.0.0.1'), trusted)).toBe('203.0.113.9')
    expect(clientAddress(req({ 'x-forwarded-for': 'garbage' }, '127.0.0.1'), trusted)).toBe('127.0.0.1')
    expect(clientAddress(req({}, '127.0.0.1'), trusted)).toBe('127.0.0.1')
    expect(() => trustedProxies(['localhost'])).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_OPTIONS_INVALID' }))
  })

  it('counts per address up to the limit and forgets an address once its last slot is released', () => {
    const counts = new ConnectionCounts()
    expect(counts.takeAddress('a', 2)).toBe(true)
    expect(counts.takeAddress('a', 2)).toBe(true)
    expect(counts.takeAddress('a', 2)).toBe(false)
    counts.releaseAddress('a')
    expect(counts.takeAddress('a', 2)).toBe(true)
    counts.releaseAddress('a')
    counts.releaseAddress('a')
    counts.addPrincipal('bob')
    counts.removePrincipal('bob')
    expect(counts.sizes).toEqual({ addresses: 0, principals: 0 })
  })
})
