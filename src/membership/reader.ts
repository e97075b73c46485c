/**
 * Membership as seen by the processes that watch the cluster without joining it — the balancer, the
 * dashboard, `chorus nginx --watch` — and by `chorus status`: membership's own read of its table
 * (live members and those down in the last ten minutes, leases on database time). A reader reads
 * again the moment a member announces a change on `channels.members`, after a bus gap (a missed
 * announcement), and every `pollMs` as a safety net; reads are coalesced, and a failed read keeps
 * the last view. It never writes: declaring members down is the job of the members themselves.
 */
import type { Logger } from 'pino'
import type { Bus } from '../bus/bus.js'
import { channels } from '../bus/channels.js'
import type { Sql } from '../db/connect.js'
import { schemaName, type SchemaName } from '../db/schema.js'
import { toError } from '../errors.js'
import type { Events } from '../events.js'
import { Rerun } from '../util/rerun.js'
import { readMembers, type WatchedMember } from './rows.js'

export type { WatchedMember } from './rows.js'

export interface ReaderDeps {
  readonly sql: Sql
  readonly schema: string
  readonly bus: Bus
  /** The events the bus reports its gaps on. */
  readonly events: Events
  readonly log: Logger
  /** Safety-net poll. Default 1 s. */
  readonly pollMs?: number
}

/** One read of the membership, for a one-shot command (`chorus status`). */
export function readMembership(sql: Sql, schema: string): Promise<WatchedMember[]> {
  return readMembers(sql, schemaName(sql, schema))
}

/**
 * Where requests may be sent: live members with an advertise URL whose lease is current on database
 * time. A member whose lease ran out but that no peer has declared down yet (isolated, or killed a
 * moment ago) is left out at once rather than when the balancer's readiness probes notice it.
 */
export function routable(members: readonly WatchedMember[]): WatchedMember[] {
  return members.filter((m) => m.status !== 'down' && m.advertiseUrl !== null && !m.expired)
}

export class MembershipReader {
  readonly #sql: Sql
  readonly #s: SchemaName
  readonly #bus: Bus
  readonly #events: Events
  readonly #log: Logger
  readonly #pollMs: number
  readonly #rerun: Rerun
  readonly #listeners = new Set<(members: readonly WatchedMember[]) => void>()
  readonly #offs: (() => void)[] = []
  #members: readonly WatchedMember[] = []
  #signature = ''
  #timer: NodeJS.Timeout | null = null
  #lastErrorLog = 0
  #closed = false

  constructor(deps: ReaderDeps) {
    this.#sql = deps.sql
    this.#s = schemaName(deps.sql, deps.schema)
    this.#bus = deps.bus
    this.#events = deps.events
    this.#log = deps.log.child({ subsystem: 'membership-reader' })
    this.#pollMs = deps.pollMs ?? 1000
    this.#rerun = new Rerun(
      () => this.#read(),
      (err) => {
        if (this.#closed || Date.now() - this.#lastErrorLog < 10_000) return
        this.#lastErrorLog = Date.now()
        this.#log.warn({ err: toError(err) }, 'could not read the membership; keeping the last view')
      },
    )
  }

  /** Reads once (failing loudly if it cannot), then follows changes. */
  async start(): Promise<void> {
    await this.#read()
    this.#offs.push(
      this.#bus.subscribe(channels.members, () => void this.refresh()),
      this.#events.on('bus:gap', () => void this.refresh()),
    )
    this.#timer = setInterval(() => void this.refresh(), this.#pollMs)
    this.#timer.unref()
  }

  /** Live members and those down in the last ten minutes, by instance id, as last read. */
  get members(): readonly WatchedMember[] {
    return this.#members
  }

  /** Live members (status not `down`: the one definition of live). */
  live(): WatchedMember[] {
    return this.#members.filter((m) => m.status !== 'down')
  }

  /** See `routable()`: live members with an advertise URL and a current lease. */
  routable(): WatchedMember[] {
    return routable(this.#members)
  }

  /**
   * Called after a read that changed a member's epoch, status, URL, roles, metadata, down reason or
   * lease expiry (not after a mere renewal).
   */
  onChange(fn: (members: readonly WatchedMember[]) => void): () => void {
    this.#listeners.add(fn)
    return () => this.#listeners.delete(fn)
  }

  /** Reads again (coalesced with a read in progress); settles after a read that started after the call. */
  refresh(): Promise<void> {
    return this.#rerun.run()
  }

  close(): void {
    if (this.#timer) clearInterval(this.#timer)
    this.#timer = null
    for (const off of this.#offs.splice(0)) off()
    this.#listeners.clear()
    this.#closed = true
  }

  async #read(): Promise<void> {
    const members = await readMembers(this.#sql, this.#s)
    this.#members = members
    const signature = JSON.stringify(members.map((m) => [m.instanceId, m.epoch, m.status, m.advertiseUrl, m.roles, m.metadata, m.downReason, m.expired]))
    if (signature === this.#signature) return
    this.#signature = signature
    for (const fn of this.#listeners) {
      try {
        fn(members)
      } catch (err) {
        this.#log.error({ err: toError(err) }, 'a membership listener failed')
      }
    }
  }
}
