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

/**
 * Array type parsers and serializers, learnt once per `connect()`. postgres.js would otherwise query
 * them on every new connection and drop that query's promise, so a backend terminated during it
 * becomes an unhandled rejection that exits Node (porsager/postgres#1192) — exactly when an
 * instance must instead ride out its connections being cut and rejoin.
 */
interface ArrayTypes {
  parsers: Record<string, unknown>
  serializers: Record<string, unknown>
  typeArrayMap: Record<string, unknown>
}

interface ClientOptions {
  parsers: Record<string, unknown>
  serializers: Record<string, unknown>
  shared: { typeArrayMap: Record<string, unknown> }
}

function optionsOf(sql: Sql): ClientOptions {
  return (sql as unknown as { options: ClientOptions }).options
}

async function learnArrayTypes(url: string, appName: string): Promise<ArrayTypes> {
  // A one-connection client that does fetch the types (while it connects), then is closed.
  const probe = postgres(url, { max: 1, connect_timeout: 10, onnotice: () => undefined, connection: { application_name: appName.slice(0, 63) } })
  try {
    await probe`select 1`
    const o = optionsOf(probe as unknown as Sql)
    return { parsers: { ...o.parsers }, serializers: { ...o.serializers }, typeArrayMap: { ...o.shared.typeArrayMap } }
  } finally {
    await probe.end({ timeout: 0 }).catch(() => undefined)
  }
}

export function openSql(
  url: string,
  opts: { schema: string; appName: string; max: number; arrayTypes?: ArrayTypes },
  /** Further postgres.js options (`onnotify`, `onclose` are accepted though not in its types). */
  extra: Record<string, unknown> = {},
): Sql {
  const sql = postgres(url, {
    max: opts.max,
    idle_timeout: 60,
    connect_timeout: 10,
    onnotice: () => undefined,
    prepare: true,
    fetch_types: !opts.arrayTypes,
    ...extra,
    // Extra connection parameters (e.g. synchronous_commit) add to ours, never replace them.
    connection: { application_name: opts.appName.slice(0, 63), search_path: opts.schema, ...(extra.connection as Record<string, unknown> | undefined) },
  }) as unknown as Sql
  if (opts.arrayTypes) {
    const o = optionsOf(sql)
    Object.assign(o.parsers, opts.arrayTypes.parsers)
    Object.assign(o.serializers, opts.arrayTypes.serializers)
    Object.assign(o.shared.typeArrayMap, opts.arrayTypes.typeArrayMap)
  }
  return sql
}

export async function connect(opts: DbOptions): Promise<Db> {
  let arrayTypes: ArrayTypes
  try {
    arrayTypes = await learnArrayTypes(opts.url, `chorus:probe:${opts.instanceId}`)
  } catch (err) {
    throw new ChorusError('CHORUS_ERR_DB_CONNECT', [redact(opts.url), (err as Error).message], { cause: err })
  }
  const clients = new Set<Sql>()
  const open = (purpose: string, max: number, extra?: Record<string, unknown>): Sql => {
    const sql = openSql(opts.url, { schema: opts.schema, appName: `chorus:${purpose}:${opts.instanceId}`, max, arrayTypes }, extra)
    clients.add(sql)
    // A client ended by its owner (membership replaces its control client on isolation) is forgotten.
    const end = sql.end.bind(sql)
    ;(sql as { end: Sql['end'] }).end = (o) => {
      clients.delete(sql)
      return end(o)
    }
    return sql
  }
  const sql = open('work', opts.poolSize)
  try {
    await sql`select 1`
  } catch (err) {
    await Promise.all([...clients].map((c) => c.end({ timeout: 0 })))
    throw new ChorusError('CHORUS_ERR_DB_CONNECT', [redact(opts.url), (err as Error).message], { cause: err })
  }
  return {
    url: opts.url,
    schema: opts.schema,
    sql,
    open,
    async close() {
      // Subsystems have finished their work by now; do not wait long on a connection a storm left half-dead.
      await Promise.all([...clients].map((c) => c.end({ timeout: 1 }).catch(() => undefined)))
    },
  }
}
