/**
 * Connections to the shared PostgreSQL. Separate clients so that one kind of traffic cannot
 * starve another: `sql` for work, and clients opened with `open()` — membership's one control
 * connection for heartbeats, the bus's LISTEN connection. Every connection runs with
 * `search_path` set to the Chorus schema, so SQL names its tables unqualified.
 */
import postgres from 'postgres'
import { ChorusError } from '../errors.js'

export type Sql = postgres.Sql<Record<string, never>>

export interface DbOptions {
  url: string
  schema: string
  instanceId: string
  poolSize: number
}

export interface Db {
  readonly url: string
  readonly schema: string
  /** The work pool. */
  readonly sql: Sql
  /** Opens another client with the same settings (the bus uses one for LISTEN). */
  open(purpose: string, max: number, extra?: Record<string, unknown>): Sql
  close(): Promise<void>
}

export function redact(url: string): string {
  try {
    const u = new URL(url)
    if (u.password) u.password = '***'
    return u.toString()
  } catch {
    return '<unparsable url>'
  }
}

export function openSql(
  url: string,
  opts: { schema: string; appName: string; max: number },
  /** Further postgres.js options (`onnotify`, `onclose` are accepted though not in its types). */
  extra: Record<string, unknown> = {},
): Sql {
  return postgres(url, {
    max: opts.max,
    idle_timeout: 60,
    connect_timeout: 10,
    onnotice: () => undefined,
    prepare: true,
    connection: { application_name: opts.appName.slice(0, 63), search_path: opts.schema },
    ...extra,
  }) as unknown as Sql
}

export async function connect(opts: DbOptions): Promise<Db> {
  const clients: Sql[] = []
  const open = (purpose: string, max: number, extra?: Record<string, unknown>): Sql => {
    const sql = openSql(opts.url, { schema: opts.schema, appName: `chorus:${purpose}:${opts.instanceId}`, max }, extra)
    clients.push(sql)
    return sql
  }
  const sql = open('work', opts.poolSize)
  try {
    await sql`select 1`
  } catch (err) {
    await Promise.all(clients.map((c) => c.end({ timeout: 0 })))
    throw new ChorusError('CHORUS_ERR_DB_CONNECT', [redact(opts.url), (err as Error).message], { cause: err })
  }
  return {
    url: opts.url,
    schema: opts.schema,
    sql,
    open,
    async close() {
      await Promise.all(clients.map((c) => c.end({ timeout: 5 }).catch(() => undefined)))
    },
  }
}
