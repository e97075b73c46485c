/**
 * Presence: how many realtime sessions each instance holds, per user, queryable cluster-wide. Each
 * instance writes its own counts (debounced, one write at a time, the latest counts last) to
 * `realtime_presence` under its epoch; readers count only rows of live members (membership's
 * `live_members`), so a dead instance's sessions vanish with it.
 */
import type { Logger } from 'pino'
import { schemaName, type SchemaName } from '../db/schema.js'
import { toError } from '../errors.js'
import { liveMembers } from '../membership/live.js'
import type { SubsystemDeps } from '../subsystem.js'
import { Rerun } from '../util/rerun.js'

export interface PresenceSnapshot {
  readonly total: number
  readonly instances: Readonly<Record<string, number>>
  /** Sessions per user name; anonymous sessions are counted under ''. */
  readonly users: Readonly<Record<string, number>>
}

export class Presence {
  readonly #deps: SubsystemDeps
  readonly #log: Logger
  readonly #s: SchemaName
  readonly #sessions = new Map<string, string>()
  #timer: NodeJS.Timeout | null = null
  readonly #writer: Rerun
  /** Settles once the last requested write is done. */
  #writing: Promise<void> = Promise.resolve()
  #closed = false

  /** `log` is the realtime subsystem's logger. */
  constructor(deps: SubsystemDeps, log: Logger) {
    this.#deps = deps
    this.#log = log
    this.#s = schemaName(deps.db.sql, deps.db.schema)
    this.#writer = new Rerun(() => this.#write(), (err) => this.#log.warn({ err: toError(err) }, 'could not record presence'))
    deps.events.on('member:self:rejoined', () => this.#schedule())
  }

  add(sessionId: string, user: string): void {
    this.#sessions.set(sessionId, user)
    this.#schedule()
  }

  remove(sessionId: string): void {
    if (this.#sessions.delete(sessionId)) this.#schedule()
  }

  #schedule(): void {
    if (this.#timer || this.#closed) return
    this.#timer = setTimeout(() => {
      this.#timer = null
      this.#writing = this.#writer.run()
    }, 100)
    this.#timer.unref()
  }

  async #write(): Promise<void> {
    const counts = new Map<string, number>()
    for (const user of this.#sessions.values()) counts.set(user, (counts.get(user) ?? 0) + 1)
    const { instanceId, epoch } = this.#deps.members.self
    try {
      await this.#deps.db.sql.begin(async (tx) => {
        await tx`delete from ${this.#s}.realtime_presence where instance_id = ${instanceId}`
        if (counts.size > 0) {
          await tx`
            insert into ${this.#s}.realtime_presence (instance_id, epoch, user_name, sessions)
            select ${instanceId}, ${epoch}, u, n from unnest(${[...counts.keys()]}::text[], ${[...counts.values()]}::int[]) as t(u, n)`
        }
      })
    } catch (err) {
      this.#log.warn({ err: toError(err) }, 'could not record presence; will retry')
      setTimeout(() => this.#schedule(), 1000).unref()
    }
  }

  async snapshot(): Promise<PresenceSnapshot> {
    const rows = await this.#deps.db.sql<{ instance_id: string; user_name: string; sessions: number }[]>`
      select p.instance_id, p.user_name, p.sessions from ${this.#s}.realtime_presence p
      join ${liveMembers(this.#deps.db.sql, this.#s)} m on m.instance_id = p.instance_id and m.epoch = p.epoch`
    const instances: Record<string, number> = {}
    const users: Record<string, number> = {}
    let total = 0
    for (const r of rows) {
      instances[r.instance_id] = (instances[r.instance_id] ?? 0) + r.sessions
      users[r.user_name] = (users[r.user_name] ?? 0) + r.sessions
      total += r.sessions
    }
    return { total, instances, users }
  }

  async close(): Promise<void> {
    this.#closed = true
    if (this.#timer) clearTimeout(this.#timer)
    await this.#writing
    await this.#deps.db.sql`delete from ${this.#s}.realtime_presence where instance_id = ${this.#deps.members.self.instanceId}`.catch(() => undefined)
  }
}
