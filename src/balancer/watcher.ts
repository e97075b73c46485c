/**
 * The balancer's view of the cluster, read from the same membership table the instances use, without
 * joining it. It refreshes when an instance announces a membership change on the bus, and polls as a
 * safety net, so an instance that dies, drains or joins is reflected within about one heartbeat.
 */
import type { Logger } from 'pino'
import { Bus } from '../bus/bus.js'
import { PostgresTransport } from '../bus/postgres.js'
import { connect, type Db } from '../db/connect.js'
import { toError } from '../errors.js'
import { Events } from '../events.js'

export interface UpstreamMember {
  readonly id: string
  readonly epoch: number
  readonly url: string
  readonly status: 'up' | 'draining'
}

export class MemberWatcher {
  readonly #url: string
  readonly #schema: string
  readonly #log: Logger
  readonly #pollMs: number
  #db: Db | null = null
  #bus: Bus | null = null
  #members: UpstreamMember[] = []
  #listeners = new Set<(members: readonly UpstreamMember[]) => void>()
  #timer: NodeJS.Timeout | null = null
  #refreshing: Promise<void> | null = null
  #again = false

  constructor(opts: { databaseUrl: string; schema: string; log: Logger; pollMs?: number }) {
    this.#url = opts.databaseUrl
    this.#schema = opts.schema
    this.#log = opts.log
    this.#pollMs = opts.pollMs ?? 1000
  }

  get members(): readonly UpstreamMember[] {
    return this.#members
  }

  onChange(fn: (members: readonly UpstreamMember[]) => void): () => void {
    this.#listeners.add(fn)
    return () => this.#listeners.delete(fn)
  }

  async start(): Promise<void> {
    const id = `balancer-${process.pid}`
    this.#db = await connect({ url: this.#url, directUrl: process.env.CHORUS_DIRECT_URL || null, schema: this.#schema, instanceId: id, poolSize: 2 })
    const events = new Events(this.#log)
    this.#bus = new Bus(new PostgresTransport({ db: this.#db, log: this.#log, payloadRetentionMs: 60_000 }), {
      instanceId: id,
      maxPayloadBytes: 1024 * 1024,
      maxQueueBytes: 1024 * 1024,
      events,
      log: this.#log,
    })
    await this.#bus.start()
    this.#bus.subscribe('chorus.members', () => void this.refresh())
    events.on('bus:gap', () => void this.refresh())
    await this.refresh()
    this.#timer = setInterval(() => void this.refresh(), this.#pollMs)
    this.#timer.unref()
  }

  refresh(): Promise<void> {
    if (this.#refreshing) {
      this.#again = true
      return this.#refreshing
    }
    this.#refreshing = (async () => {
      try {
        do {
          this.#again = false
          const rows = await this.#db!.sql<{ instance_id: string; epoch: string; advertise_url: string; status: 'up' | 'draining' }[]>`
            select instance_id, epoch, advertise_url, status from ${this.#db!.sql(this.#schema)}.members
            where status <> 'down' and expires_at > now() and advertise_url is not null
            order by instance_id`
          const next = rows.map((r) => ({ id: r.instance_id, epoch: Number(r.epoch), url: r.advertise_url, status: r.status }))
          if (JSON.stringify(next) !== JSON.stringify(this.#members)) {
            this.#members = next
            for (const fn of this.#listeners) fn(next)
          }
        } while (this.#again)
      } catch (err) {
        this.#log.warn({ err: toError(err) }, 'balancer: could not read the membership; keeping the last view')
      } finally {
        this.#refreshing = null
      }
    })()
    return this.#refreshing
  }

  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer)
    await this.#bus?.close()
    await this.#db?.close()
  }
}
