/**
 * Liveness and readiness of this instance, as data and as request handlers (Node http, Express,
 * Fastify) at `/health/live` and `/health/ready`. Live: the process works and has not stopped (an
 * instance cut off from the database stays live: it rejoins by itself, a restart would not help).
 * Ready: joined, not isolated, not draining, and the database acknowledged a renewal within
 * `failAfterMs` — what a balancer or a Kubernetes readiness probe must check before sending traffic.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'

export interface HealthCheck {
  readonly ok: boolean
  readonly detail: string
}

export interface HealthReport {
  /** `pass` when every check is ok. */
  readonly status: 'pass' | 'fail'
  readonly instanceId: string
  /** The cluster's state: starting, up, isolated, draining, stopped. */
  readonly state: string
  readonly checks: Readonly<Record<string, HealthCheck>>
}

/** What health reads; the cluster provides it. */
export interface HealthSources {
  readonly instanceId: string
  readonly failAfterMs: number
  state(): string
  /** Milliseconds since the database last acknowledged this instance's renewal; null before joining. */
  sinceContactMs(): number | null
}

type Next = (err?: unknown) => void

/** Minimal Fastify surface, so Fastify stays an optional peer. */
interface FastifyLike {
  get(path: string, handler: (request: unknown, reply: FastifyReplyLike) => unknown): unknown
}
interface FastifyReplyLike {
  code(status: number): FastifyReplyLike
  header(name: string, value: string): FastifyReplyLike
  send(body: unknown): unknown
}

export class Health {
  readonly #src: HealthSources

  constructor(sources: HealthSources) {
    this.#src = sources
  }

  /** Liveness: fails only once the cluster has stopped. */
  live(): HealthReport {
    const state = this.#src.state()
    return this.#report(state, { running: { ok: state !== 'stopped', detail: state === 'stopped' ? 'the cluster has stopped' : 'running' } })
  }

  /** Readiness: joined, not isolated, not draining, database reachable. */
  ready(): HealthReport {
    const state = this.#src.state()
    const since = this.#src.sinceContactMs()
    const reachable = since !== null && since < this.#src.failAfterMs
    return this.#report(state, {
      joined: { ok: state !== 'starting' && state !== 'stopped', detail: state === 'starting' ? 'not joined yet' : state === 'stopped' ? 'left' : 'joined' },
      isolated: { ok: state !== 'isolated', detail: state === 'isolated' ? 'cut off from the database; rejoining' : 'member' },
      draining: { ok: state !== 'draining', detail: state === 'draining' ? 'draining: no new work' : 'serving' },
      database: {
        ok: reachable,
        detail: since === null ? 'no renewal yet' : `last renewal acknowledged ${Math.round(since)} ms ago (limit ${this.#src.failAfterMs} ms)`,
      },
    })
  }

  /**
   * Answers `GET|HEAD …/health/live` and `…/health/ready` (200 when passing, 503 otherwise, JSON
   * body); any other request goes to `next` (Express) or gets a 404. Mount it as a Node http
   * request handler or as Express middleware.
   */
  readonly handler = (req: IncomingMessage, res: ServerResponse, next?: Next): void => {
    const path = (req.url ?? '/').split('?')[0]!
    const which = path.endsWith('/health/live') ? 'live' : path.endsWith('/health/ready') ? 'ready' : null
    if (which === null || (req.method !== 'GET' && req.method !== 'HEAD')) {
      if (next) return next()
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}')
      return
    }
    const report = which === 'live' ? this.live() : this.ready()
    const body = JSON.stringify(report)
    res.writeHead(report.status === 'pass' ? 200 : 503, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) })
    res.end(req.method === 'HEAD' ? undefined : body)
  }

  /** Registers `GET /health/live` and `GET /health/ready` (under `prefix`) on a Fastify instance. */
  fastify(app: FastifyLike, opts: { prefix?: string } = {}): void {
    const prefix = opts.prefix ?? ''
    for (const which of ['live', 'ready'] as const) {
      app.get(`${prefix}/health/${which}`, (_request, reply) => {
        const report = which === 'live' ? this.live() : this.ready()
        return reply.code(report.status === 'pass' ? 200 : 503).header('cache-control', 'no-store').send(report)
      })
    }
  }

  #report(state: string, checks: Record<string, HealthCheck>): HealthReport {
    const status = Object.values(checks).every((c) => c.ok) ? 'pass' : 'fail'
    return { status, instanceId: this.#src.instanceId, state, checks }
  }
}
