/**
 * The balancer's view of the cluster: membership's reader (src/membership/reader.ts) reduced to the
 * members requests may go to (`routable`: live, with an advertise URL, lease current), as upstreams.
 * The watcher builds its process's foundation (connections and bus) at the one assembly point, with
 * the bus limits every process shares, and closes it.
 */
import type { Logger } from 'pino'
import { assemble, type Foundation } from '../assembly.js'
import { Events } from '../events.js'
import { MembershipReader, type WatchedMember } from '../membership/reader.js'

export interface UpstreamMember {
  readonly id: string
  readonly epoch: number
  readonly url: string
  readonly status: 'up' | 'draining'
}

export interface WatcherOptions {
  readonly databaseUrl: string
  readonly schema: string
  readonly log: Logger
  /** The reader's safety-net poll. Default 1 s. */
  readonly pollMs?: number
  /** Connections of the work pool. Default 2. */
  readonly poolSize?: number
}

function upstreams(members: readonly WatchedMember[]): UpstreamMember[] {
  return members.flatMap((m) => (m.advertiseUrl !== null && m.status !== 'down' ? [{ id: m.instanceId, epoch: m.epoch, url: m.advertiseUrl, status: m.status }] : []))
}

export class MemberWatcher {
  readonly #opts: WatcherOptions
  #reader: MembershipReader | null = null
  #foundation: Foundation | null = null
  #members: UpstreamMember[] = []
  #signature = ''
  readonly #listeners = new Set<(members: readonly UpstreamMember[]) => void>()
  #off: (() => void) | null = null

  constructor(opts: WatcherOptions) {
    this.#opts = opts
  }

  #adopt(reader: MembershipReader): void {
    this.#reader = reader
    this.#off = reader.onChange(() => this.#update())
    this.#update()
  }

  get members(): readonly UpstreamMember[] {
    return this.#members
  }

  onChange(fn: (members: readonly UpstreamMember[]) => void): () => void {
    this.#listeners.add(fn)
    return () => this.#listeners.delete(fn)
  }

  async start(): Promise<void> {
    if (this.#reader) return
    const o = this.#opts
    const events = new Events(o.log)
    const foundation = await assemble({
      instanceId: `balancer-${process.pid}`,
      databaseUrl: o.databaseUrl,
      directUrl: process.env.CHORUS_DIRECT_URL || null,
      schema: o.schema,
      poolSize: o.poolSize ?? 2,
      migrate: false,
      log: o.log,
      events,
    })
    this.#foundation = foundation
    const reader = new MembershipReader({ sql: foundation.db.sql, schema: o.schema, bus: foundation.bus, events, log: o.log, ...(o.pollMs ? { pollMs: o.pollMs } : {}) })
    try {
      await reader.start()
    } catch (err) {
      await foundation.close()
      throw err
    }
    this.#adopt(reader)
  }

  /** Reads the membership again now. */
  refresh(): Promise<void> {
    return this.#reader?.refresh() ?? Promise.resolve()
  }

  #update(): void {
    const next = upstreams(this.#reader!.routable())
    const signature = JSON.stringify(next)
    if (signature === this.#signature) return
    this.#signature = signature
    this.#members = next
    for (const fn of this.#listeners) fn(next)
  }

  async close(): Promise<void> {
    this.#off?.()
    if (!this.#foundation) return
    this.#reader?.close()
    await this.#foundation.close()
  }
}
