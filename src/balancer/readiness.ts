/**
 * The one readiness rule for members seen from outside, used by the built-in balancer and by
 * `chorus nginx --watch`: each member's readiness path (`/health/ready`, see src/health.ts) is
 * probed every second. A 5xx answer marks it not ready at once (isolated from the database,
 * draining, starting); a 2xx-4xx answer marks it ready (an app without the route stays routable);
 * two failed probes in a row mark it not ready (one lost probe on a busy instance is not a verdict).
 * A member is probed by one probe at a time; a new epoch or URL starts it afresh, ready.
 */
import { request } from 'undici'
import { toError } from '../errors.js'

/** What the prober needs to know of a member. */
export interface Probed {
  readonly id: string
  readonly epoch: number
  readonly url: string
}

interface State {
  epoch: number
  url: string
  ready: boolean
  failures: number
  probing: boolean
}

export interface ReadinessHooks {
  /** A member's readiness changed; `why` says what the probe saw. */
  readonly onChange: (id: string, ready: boolean, why: string) => void
  /** Whether to probe this member now (the balancer skips members it has ejected until their time is up). Default: always. */
  readonly shouldProbe?: (id: string) => boolean
  /** After each probe: whether the member answered at all (the balancer ends or extends an ejection). */
  readonly onProbed?: (id: string, answered: boolean) => void
}

const PROBE_TIMEOUT_MS = 2000

export class ReadinessProber {
  readonly #path: string
  readonly #everyMs: number
  readonly #hooks: ReadinessHooks
  readonly #state = new Map<string, State>()
  #members: readonly Probed[] = []
  #timer: NodeJS.Timeout | null = null

  constructor(opts: { path?: string; everyMs?: number } & ReadinessHooks) {
    this.#path = opts.path ?? '/health/ready'
    this.#everyMs = opts.everyMs ?? 1000
    this.#hooks = opts
  }

  /** The members to probe (the current view); members no longer in it are forgotten. */
  track(members: readonly Probed[]): void {
    this.#members = members
    const ids = new Set(members.map((m) => m.id))
    for (const id of this.#state.keys()) if (!ids.has(id)) this.#state.delete(id)
    for (const m of members) {
      const s = this.#state.get(m.id)
      if (s && (s.epoch !== m.epoch || s.url !== m.url)) this.#state.delete(m.id)
    }
  }

  /** Whether a member answered ready last (unknown members count as ready until probed). */
  isReady(id: string): boolean {
    return this.#state.get(id)?.ready ?? true
  }

  start(): void {
    this.#timer = setInterval(() => void this.probe(), this.#everyMs)
    this.#timer.unref()
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer)
    this.#timer = null
  }

  /** Probes every tracked member once (those not already being probed). */
  async probe(): Promise<void> {
    await Promise.all(this.#members.map((m) => this.#probeOne(m)))
  }

  async #probeOne(m: Probed): Promise<void> {
    let s = this.#state.get(m.id)
    if (!s) this.#state.set(m.id, (s = { epoch: m.epoch, url: m.url, ready: true, failures: 0, probing: false }))
    if (s.probing || (this.#hooks.shouldProbe && !this.#hooks.shouldProbe(m.id))) return
    s.probing = true
    let answered = false
    let ready = s.ready
    let why = ''
    try {
      const r = await request(`${new URL(m.url).origin}${this.#path}`, { method: 'GET', headersTimeout: PROBE_TIMEOUT_MS, bodyTimeout: PROBE_TIMEOUT_MS })
      await r.body.dump()
      answered = true
      s.failures = 0
      ready = r.statusCode < 500
      why = `readiness answered ${r.statusCode}`
    } catch (err) {
      if (++s.failures >= 2) ready = false
      why = `readiness probe failed: ${toError(err).message}`
    } finally {
      s.probing = false
    }
    // The member may have been replaced (new epoch or URL) or removed while the probe ran.
    if (this.#state.get(m.id) !== s) return
    this.#hooks.onProbed?.(m.id, answered)
    if (ready === s.ready) return
    s.ready = ready
    this.#hooks.onChange(m.id, ready, why)
  }
}
