/**
 * Connections to the shared PostgreSQL. Separate clients so that one kind of traffic cannot
 * starve another: `sql` for work, and clients opened with `open()` (membership's control
 * connection, the jobs and locks pools) or `openSession()` (the bus's LISTEN, migrations).
 *
 * Two URLs: `url` may point at a pooler in transaction mode (PgBouncer, a managed database's
 * pooler), so nothing sent through it relies on session state — no startup parameters, no named
 * prepared statements, schema-qualified SQL; `directUrl` is a real session for LISTEN and the
 * migration lock. Without a direct URL the one URL must be a real session, which `connect()`
 * checks (a LISTEN that hears a NOTIFY) and refuses to start otherwise.
 *
 * Every client reconnects on one bounded, jittered backoff (`reconnectDelayMs`); the driver's own
 * grows to 20 s with a pool-wide counter, which kept subsystems down long after PostgreSQL was back.
 */
import { randomBytes } from 'node:crypto'
import postgres from 'postgres'
import { ChorusError } from '../errors.js'
import { reconnectDelayMs } from './backoff.js'
import { connectError, describeUrl } from './connect-error.js'

export type Sql = postgres.Sql<Record<string, never>>

export interface DbOptions {
  url: string
  /** A real session (LISTEN, migration lock) when `url` is a pooler; null: `url` is one. */
  directUrl?: string | null
  schema: string
  instanceId: string
  poolSize: number
}

export interface Db {
  readonly url: string
  /** Where session work goes: the direct URL, or `url` when there is none. */
  readonly directUrl: string
  /** True when `url` goes through a pooler (a distinct direct URL was given). */
  readonly pooled: boolean
  readonly schema: string
  /** The work pool. */
  readonly sql: Sql
  /** Opens another client on `url` (pooler-safe work). */
  open(purpose: string, max: number, extra?: Record<string, unknown>): Sql
  /** Opens a client on the direct URL, for session work (LISTEN, session locks). */
  openSession(purpose: string, max: number, extra?: Record<string, unknown>): Sql
  /** Ends every client, waiting at most `timeoutS` seconds for queries in flight (0: cut at once). */
  close(timeoutS?: number): Promise<void>
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

const base = {
  connect_timeout: 10,
  onnotice: () => undefined,
  // Seconds, as the driver wants them; called with the pool's count of failed connects.
  backoff: (retries: number) => reconnectDelayMs(retries) / 1000,
}

function readTypes(sql: Sql): ArrayTypes {
  const o = optionsOf(sql)
  return { parsers: { ...o.parsers }, serializers: { ...o.serializers }, typeArrayMap: { ...o.shared.typeArrayMap } }
}

/**
 * Learns the array types, and — when no direct URL was given — checks that the URL is a real
 * session: a LISTEN on one connection must hear a NOTIFY sent from another. Behind a pooler in
 * transaction or statement mode it never does (the listening backend is handed to other clients).
 */
async function probe(url: string, appName: string, checkSession: boolean): Promise<{ types: ArrayTypes; session: boolean }> {
  const client = postgres(url, { ...base, max: 1, prepare: false, connection: { application_name: appName.slice(0, 63) } }) as unknown as Sql
  try {
    await client`select 1`
    const types = readTypes(client)
    if (!checkSession) return { types, session: true }
    const channel = `chorus_probe_${randomBytes(6).toString('hex')}`
    let heard!: () => void
    const got = new Promise<boolean>((resolve) => {
      heard = () => resolve(true)
      setTimeout(resolve, 2000, false).unref()
    })
    const listener = await client.listen(channel, () => heard())
    await client`select pg_notify(${channel}, 'probe')`
    const session = await got
    await listener.unlisten().catch(() => undefined)
    return { types, session }
  } finally {
    await client.end({ timeout: 0 }).catch(() => undefined)
  }
}

/**
 * Refuses a URL that goes through a pooler in transaction or statement mode (LISTEN there hears
 * nothing) with `CHORUS_ERR_DB_POOLER`; used where session work is about to go to `url`.
 */
export async function assertSession(url: string, appName: string): Promise<void> {
  let found: { session: boolean }
  try {
    found = await probe(url, appName, true)
  } catch (err) {
    throw connectError(url, err)
  }
  if (!found.session) throw new ChorusError('CHORUS_ERR_DB_POOLER', [describeUrl(url)])
}

export function openSql(
  url: string,
  opts: { appName: string; max: number; arrayTypes?: ArrayTypes; prepare?: boolean },
  /** Further postgres.js options (`onnotify`, `onclose` are accepted though not in its types). */
  extra: Record<string, unknown> = {},
): Sql {
  const sql = postgres(url, {
    ...base,
    max: opts.max,
    idle_timeout: 60,
    prepare: opts.prepare ?? true,
    fetch_types: !opts.arrayTypes,
    ...extra,
    // No startup parameter but the application name: a pooler refuses or drops the others.
    connection: { application_name: opts.appName.slice(0, 63) },
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
  const directUrl = opts.directUrl && opts.directUrl !== opts.url ? opts.directUrl : null
  let arrayTypes: ArrayTypes
  try {
    const found = await probe(opts.url, `chorus:probe:${opts.instanceId}`, directUrl === null)
    if (!found.session) throw new ChorusError('CHORUS_ERR_DB_POOLER', [describeUrl(opts.url)])
    arrayTypes = found.types
  } catch (err) {
    if (err instanceof ChorusError) throw err
    throw connectError(opts.url, err)
  }
  if (directUrl !== null) {
    try {
      await probe(directUrl, `chorus:probe:${opts.instanceId}`, false)
    } catch (err) {
      throw connectError(directUrl, err)
    }
  }
  const pooled = directUrl !== null
  const clients = new Set<Sql>()
  const track = (sql: Sql): Sql => {
    clients.add(sql)
    // A client ended by its owner (membership replaces its control client on isolation) is forgotten.
    const end = sql.end.bind(sql)
    ;(sql as { end: Sql['end'] }).end = (o) => {
      clients.delete(sql)
      return end(o)
    }
    return sql
  }
  const appName = (purpose: string) => `chorus:${purpose}:${opts.instanceId}`
  // Through a pooler in transaction mode a named prepared statement may meet another backend.
  const open = (purpose: string, max: number, extra?: Record<string, unknown>): Sql =>
    track(openSql(opts.url, { appName: appName(purpose), max, arrayTypes, prepare: !pooled }, extra))
  const openSession = (purpose: string, max: number, extra?: Record<string, unknown>): Sql =>
    track(openSql(directUrl ?? opts.url, { appName: appName(purpose), max, arrayTypes }, extra))
  const sql = open('work', opts.poolSize)
  try {
    await sql`select 1`
  } catch (err) {
    await Promise.all([...clients].map((c) => c.end({ timeout: 0 })))
    throw connectError(opts.url, err)
  }
  return {
    url: opts.url,
    directUrl: directUrl ?? opts.url,
    pooled,
    schema: opts.schema,
    sql,
    open,
    openSession,
    async close(timeoutS = 1) {
      // Subsystems have finished their work by now; do not wait long on a connection a storm left half-dead.
      await Promise.all([...clients].map((c) => c.end({ timeout: timeoutS }).catch(() => undefined)))
    },
  }
}
