/**
 * Who the client is, and what the balancer tells the instances about it. The balancer writes
 * `X-Forwarded-For`, `Forwarded`, `X-Real-IP`, `X-Forwarded-Proto` and `X-Forwarded-Host` itself:
 * whatever a client sent under those names is dropped, unless the connection comes from a proxy
 * named in `trustProxy` (addresses or CIDRs), whose chain is kept and extended. The client address
 * is then the right-most address of the chain that is not itself a trusted proxy, as nginx's
 * realip and Express's `trust proxy` take it.
 */
import type { IncomingMessage } from 'node:http'
import { BlockList, isIP } from 'node:net'
import { ChorusError } from '../errors.js'

/** Request headers that describe the client or the path to it; only a trusted proxy may set them. */
export const PROXY_HEADERS: ReadonlySet<string> = new Set(['forwarded', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-forwarded-port', 'x-forwarded-prefix', 'x-real-ip'])
/** The ones a trusted proxy's value is passed on for, unchanged. */
const PASSED_WHEN_TRUSTED = ['x-forwarded-port', 'x-forwarded-prefix']

export interface Client {
  /** The address of the connection's other end. */
  readonly peer: string
  /** The client as far as it can be trusted: `peer`, or what trusted proxies say is behind them. */
  readonly address: string
  /** `peer` is a configured proxy, so its proxy headers are believed. */
  readonly trusted: boolean
}

/** A header's value as one string (Node joins most repeated headers already). */
function joined(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(', ') : value
}

/** `::ffff:10.0.0.1` (an IPv4 client on a dual-stack socket) is `10.0.0.1`. */
function plain(address: string): string {
  return address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address
}

export class TrustedProxies {
  readonly #list: BlockList | null

  /** Throws CHORUS_ERR_OPTIONS_INVALID for an entry that is not an IPv4/IPv6 address or CIDR. */
  constructor(entries: readonly string[] = []) {
    if (entries.length === 0) {
      this.#list = null
      return
    }
    const list = new BlockList()
    for (const raw of entries) {
      const bad = () => new ChorusError('CHORUS_ERR_OPTIONS_INVALID', ['trustProxy', `${JSON.stringify(raw)} is not an IP address or CIDR`], { details: { option: 'trustProxy' } })
      const [address = '', bits, extra] = String(raw).trim().split('/')
      const family = isIP(address)
      if (family === 0 || extra !== undefined) throw bad()
      const type = family === 6 ? 'ipv6' : 'ipv4'
      if (bits === undefined) {
        list.addAddress(address, type)
      } else {
        if (!/^\d{1,3}$/.test(bits) || Number(bits) > (family === 6 ? 128 : 32)) throw bad()
        list.addSubnet(address, Number(bits), type)
      }
    }
    this.#list = list
  }

  trusts(address: string): boolean {
    const family = isIP(address)
    return this.#list !== null && family !== 0 && this.#list.check(address, family === 6 ? 'ipv6' : 'ipv4')
  }

  clientOf(req: IncomingMessage): Client {
    const peer = plain(req.socket.remoteAddress ?? '')
    if (this.#list === null || !this.trusts(peer)) return { peer, address: peer, trusted: false }
    let address = peer
    const chain = joined(req.headers['x-forwarded-for'])
    if (chain) {
      const hops = chain.split(',')
      for (let i = hops.length - 1; i >= 0; i--) {
        const hop = plain(hops[i]!.trim())
        if (isIP(hop) === 0) break // not an address: keep the last one that was
        address = hop
        if (!this.trusts(hop)) break
      }
    }
    return { peer, address, trusted: true }
  }
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
/** The last host's `Forwarded` value: nearly every request names the same host. */
let lastHost = ''
let lastHostValue = ''

/** A `Forwarded` parameter value (RFC 7239): a token as is, anything else quoted. */
function forwardedValue(value: string): string {
  if (value === lastHost) return lastHostValue
  const quoted = TOKEN.test(value) ? value : `"${value.replace(/["\\]/g, '\\$&')}"`
  lastHost = value
  lastHostValue = quoted
  return quoted
}

/** A `Forwarded` node (RFC 7239): an IPv6 address quoted in brackets, none `unknown`. */
function forwardedNode(address: string): string {
  return address === '' ? 'unknown' : address.includes(':') ? `"[${address}]"` : address
}

/**
 * Sets the proxy headers of a request forwarded for `client` into `out` (which holds the other
 * headers to forward, none of PROXY_HEADERS among them).
 */
export function setProxyHeaders(out: Record<string, string | string[]>, req: IncomingMessage, client: Client, proto: 'http' | 'https'): void {
  const host = req.headers.host
  const h = client.trusted ? req.headers : null
  const priorFor = joined(h?.['x-forwarded-for'])
  out['x-forwarded-for'] = priorFor ? `${priorFor}, ${client.peer}` : client.peer
  out['x-real-ip'] = client.address
  out['x-forwarded-proto'] = joined(h?.['x-forwarded-proto']) || proto
  const forwardedHost = joined(h?.['x-forwarded-host']) || host
  if (forwardedHost) out['x-forwarded-host'] = forwardedHost
  const element = `for=${forwardedNode(client.peer)}${host ? `;host=${forwardedValue(host)}` : ''};proto=${proto}`
  const priorForwarded = joined(h?.forwarded)
  out.forwarded = priorForwarded ? `${priorForwarded}, ${element}` : element
  if (h) {
    for (const name of PASSED_WHEN_TRUSTED) {
      const v = h[name]
      if (v !== undefined) out[name] = v
    }
  }
}
