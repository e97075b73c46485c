/**
 * What a subsystem (locks, jobs, realtime, …) gives the cluster so the lifecycle stays in one place.
 * The cluster starts subsystems in registration order once the instance is a member, drains them in
 * the same order when `close()` begins, and closes them in reverse order before leaving — so work is
 * finished or handed back while peers still see this instance as alive.
 */
import type { Logger } from 'pino'
import type { Bus } from './bus/bus.js'
import type { Db } from './db/connect.js'
import type { Events } from './events.js'
import type { Membership } from './membership/membership.js'
import type { ResolvedOptions } from './options.js'

/** Everything a subsystem may depend on. */
export interface SubsystemDeps {
  readonly options: ResolvedOptions
  readonly log: Logger
  readonly events: Events
  readonly db: Db
  readonly bus: Bus
  readonly members: Membership
}

export interface Subsystem {
  readonly name: string
  /** Called once the instance has joined. */
  start?(): Promise<void>
  /** Stop taking new work; let in-flight work finish. */
  drain?(): Promise<void>
  /** Release everything held (locks, claims); called in reverse order, before leaving. */
  close(): Promise<void>
}
