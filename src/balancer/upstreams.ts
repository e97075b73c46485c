/**
 * The balancer's upstreams: one per routable member (see MemberWatcher), each with its bounded
 * keep-alive pool, its requests in flight, its open tunnels, whether it is ejected (it refused a
 * connection) and whether its readiness probe passes (readiness.ts, the one rule). Selection picks
 * among the eligible — `up`, ready, not ejected — by the sticky pin, then round-robin or least
 * connections. A member that starts draining keeps its tunnels for a grace period; one that is gone
 * or replaced (new epoch or URL) is retired: its pool closed, its tunnels cut.
 */
import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { readAffinity } from './affinity.js'
import type { ResolvedBalancerOptions } from './options.js'
import { ReadinessProber } from './readiness.js'
import { UpstreamPool } from './upstream-pool.js'
import type { UpstreamMember } from './watcher.js'

export interface Upstream {
  readonly member: UpstreamMember
  readonly pool: UpstreamPool
  readonly origin: string
  readonly host: string
  readonly port: number
  readonly secure: boolean
  active: number
  ejectedUntil: number
  /** The last readiness probe said so (or two probes in a row failed to answer). */
  ready: boolean
  tunnels: Set<Duplex>
  drainTimer: NodeJS.Timeout | null
}

/** Connecting to an upstream gives up after this long. */
export const CONNECT_TIMEOUT_MS = 2000

export class Upstreams {
  readonly #opts: ResolvedBalancerOptions
  readonly #log: Logger
  readonly #map = new Map<string, Upstream>()
  readonly #prober: ReadinessProber
  #rr = 0

  constructor(opts: ResolvedBalancerOptions, log: Logger) {
    this.#opts = opts
    this.#log = log
    this.#prober = new ReadinessProber({
      path: opts.healthPath,
      // Ejected upstreams are probed too: one that refused a connection because it joined before it
      // listened serves again as soon as it answers, not after the whole ejection.
      onProbed: (id, answered) => this.#probed(id, answered),
      onChange: (id, ready, why) => this.#setReady(id, ready, why),
    })
  }

  get(id: string): Upstream | undefined {
    return this.#map.get(id)
  }

  has(id: string): boolean {
    return this.#map.has(id)
  }

  startProbing(): void {
    this.#prober.start()
  }

  /** Follows the watcher's members: adds, updates (draining) and retires upstreams. */
  sync(members: readonly UpstreamMember[]): void {
    const seen = new Set<string>()
    for (const m of members) {
      seen.add(m.id)
      const current = this.#map.get(m.id)
      if (current && current.member.url === m.url && current.member.epoch === m.epoch) {
        if (current.member.status !== m.status) {
          ;(current as { member: UpstreamMember }).member = m
          if (m.status === 'draining') this.scheduleCut(current)
        }
        continue
      }
      if (current) this.#retire(current)
      let url: URL
      try {
        url = new URL(m.url)
      } catch {
        continue
      }
      const target = { host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(url.port || (url.protocol === 'https:' ? 443 : 80)), secure: url.protocol === 'https:' }
      const up: Upstream = {
        member: m,
        pool: new UpstreamPool(target, { limit: this.#opts.connectionsPerUpstream, connectTimeoutMs: CONNECT_TIMEOUT_MS, maxHeaderBytes: this.#opts.maxHeaderBytes }),
        origin: url.origin,
        ...target,
        active: 0,
        ejectedUntil: 0,
        ready: true,
        tunnels: new Set(),
        drainTimer: null,
      }
      this.#map.set(m.id, up)
      if (m.status === 'draining') this.scheduleCut(up)
      this.#log.info({ member: m.id, url: m.url, status: m.status }, 'upstream added')
    }
    for (const [id, up] of this.#map) {
      if (!seen.has(id)) {
        this.#log.info({ member: id }, 'upstream removed')
        this.#retire(up)
      }
    }
    this.#prober.track([...this.#map.values()].map((u) => u.member))
  }

  /** Cuts the tunnels of a draining upstream after the grace period. */
  scheduleCut(up: Upstream): void {
    if (up.drainTimer || up.tunnels.size === 0) return
    up.drainTimer = setTimeout(() => {
      for (const t of up.tunnels) t.destroy()
    }, this.#opts.drainGraceMs)
    up.drainTimer.unref()
  }

  eligible(exclude?: ReadonlySet<string> | null): Upstream[] {
    const now = Date.now()
    const out: Upstream[] = []
    for (const u of this.#map.values()) if (u.member.status === 'up' && u.ready && u.ejectedUntil <= now && !exclude?.has(u.member.id)) out.push(u)
    return out
  }

  /** The upstream for `req` (its pin when sticky and eligible), and whether to pin the client to it. */
  pick(req: IncomingMessage, exclude: ReadonlySet<string> | null): { up: Upstream; pin: boolean } | null {
    const candidates = this.eligible(exclude)
    if (candidates.length === 0) return null
    if (this.#opts.sticky) {
      const pinned = readAffinity(this.#opts.secret, req.headers.cookie, this.#opts.stickyCookie)
      const up = pinned ? candidates.find((c) => c.member.id === pinned) : undefined
      if (up) return { up, pin: false }
    }
    let up: Upstream
    if (this.#opts.strategy === 'least-connections') {
      up = candidates.reduce((best, c) => (c.active < best.active ? c : best))
      // Spread ties instead of always favouring the first.
      const ties = candidates.filter((c) => c.active === up.active)
      up = ties[this.#rr++ % ties.length]!
    } else {
      up = candidates[this.#rr++ % candidates.length]!
    }
    return { up, pin: this.#opts.sticky }
  }

  /** Leaves an upstream that refused a connection out for `ejectMs` (then its probe decides). */
  eject(up: Upstream, why: string): void {
    if (up.ejectedUntil > Date.now()) return
    up.ejectedUntil = Date.now() + this.#opts.ejectMs
    this.#log.warn({ member: up.member.id, why }, 'upstream ejected')
  }

  close(): void {
    this.#prober.stop()
    for (const up of [...this.#map.values()]) this.#retire(up)
  }

  #probed(id: string, answered: boolean): void {
    const up = this.#map.get(id)
    if (!up || up.ejectedUntil === 0) return
    if (!answered) {
      up.ejectedUntil = Date.now() + this.#opts.ejectMs
      return
    }
    up.ejectedUntil = 0
    this.#log.info({ member: id }, 'upstream healthy again')
  }

  #setReady(id: string, ready: boolean, why: string): void {
    const up = this.#map.get(id)
    if (!up || up.ready === ready) return
    up.ready = ready
    if (ready) this.#log.info({ member: id }, 'upstream ready again')
    else this.#log.warn({ member: id, why }, 'upstream not ready: no new requests')
  }

  #retire(up: Upstream): void {
    this.#map.delete(up.member.id)
    if (up.drainTimer) clearTimeout(up.drainTimer)
    for (const t of up.tunnels) t.destroy()
    up.pool.close()
  }
}
