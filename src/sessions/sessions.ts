/**
 * `cluster.sessions`: makes session stores for web frameworks, all on the cluster's database, and
 * sweeps expired sessions (cluster-wide, by the state sweep — never once per instance).
 */
import type { Sql } from '../db/connect.js'
import { schemaName } from '../db/schema.js'
import { SessionStore, type SessionStoreOptions } from './store.js'

export class Sessions {
  readonly #sql: Sql
  readonly #schema: string

  /** @internal `deps.schema`: the Chorus schema (default `chorus`). */
  constructor(deps: { sql: Sql; schema?: string }) {
    this.#sql = deps.sql
    this.#schema = deps.schema ?? 'chorus'
  }

  /**
   * A store for express-session (`session({ store })`) or @fastify/session
   * (`fastify.register(fastifySession, { store })`). Stores of the same `name` share their sessions
   * across every instance.
   */
  store(opts: SessionStoreOptions = {}): SessionStore {
    return new SessionStore(opts, { sql: this.#sql, schema: this.#schema })
  }
}

/** Deletes expired sessions of every store; returns how many. Run cluster-wide by one instance at a time. */
export async function sweepSessions(sql: Sql, schema = 'chorus', batch = 5000): Promise<number> {
  const s = schemaName(sql, schema)
  let total = 0
  for (;;) {
    const rows = await sql`
      delete from ${s}.sessions where ctid in (
        select ctid from ${s}.sessions where expires_at <= now() limit ${batch})
      returning 1`
    total += rows.length
    if (rows.length < batch) return total
  }
}
