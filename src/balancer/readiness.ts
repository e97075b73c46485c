/**
 * Readiness of the members as seen from outside: each member's readiness path (`/health/ready`,
 * see src/health.ts) is probed every second. A 5xx answer marks it not ready at once (isolated from
 * the database, draining, starting); a 2xx-4xx answer marks it ready (an app without the route
 * stays routable); two failed probes in a row mark it not ready. `chorus nginx --watch` renders
 * not-ready members `down`; the built-in balancer keeps its own prober, tied to ejection.
 */
import { request } from 'undici'
import type { UpstreamMember } from './watcher.js'

export class ReadinessProber {
  readonly #path: string
  readonly #everyMs: number
  readonly #state = new Map<string, { ready: boolean; failures: number }>()
  #members: readonly UpstreamMember[] = []
  #timer: NodeJS.Timeout | null = null
  #onChange: () => void

  constructor(opts: { path?: string; everyMs?: number; onChange: () => void }) {
    this.#path = opts.path ?? '/health/ready'
    this.#everyMs = opts.everyMs ?? 1000
    this.#onChange = opts.onChange
  }

  /** The members to probe (the watcher's current view). */
  track(members: readonly UpstreamMember[]): void {
    this.#members = members
    const ids = new Set(members.map((m) => m.id))
    for (const id of this.#state.keys()) if (!ids.has(id)) this.#state.delete(id)
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

  /** Probes every member once; calls `onChange` when any readiness changed. */
  async probe(): Promise<void> {
    let changed = false
    await Promise.all(
      this.#members.map(async (m) => {
        const s = this.#state.get(m.id) ?? { ready: true, failures: 0 }
        this.#state.set(m.id, s)
        let ready = s.ready
        try {
          const r = await request(`${new URL(m.url).origin}${this.#path}`, { method: 'GET', headersTimeout: 2000, bodyTimeout: 2000 })
          await r.body.dump()
          s.failures = 0
          ready = r.statusCode < 500
        } catch {
          if (++s.failures >= 2) ready = false
        }
        if (ready !== s.ready) {
          s.ready = ready
          changed = true
        }
      }),
    )
    if (changed) this.#onChange()
  }
}
