/**
 * How runtime statements reach the Chorus schema without relying on session state: the schema is
 * named in each statement, and settings last one transaction. A pooler in transaction mode accepts
 * no `search_path` at startup and hands each transaction whichever server connection is free.
 */
import type postgres from 'postgres'

// Any client of the driver (a pool, a reserved connection, a transaction) builds the same pieces.
type AnySql = postgres.Sql<any> | postgres.TransactionSql<any>

/**
 * The schema as an identifier: `sql\`select … from ${s}.members\``. It is written into the text of
 * the statement (not sent as a parameter), so statements are still prepared and reused, and it
 * works in any client of the driver, transactions included.
 */
export type SchemaName = postgres.Helper<string, []>

export function schemaName(sql: AnySql, schema: string): SchemaName {
  return (sql as postgres.Sql<any>)(schema) as SchemaName
}

/** A sequence of the schema, as the parameter of `nextval(${seq}::regclass)` (a literal cannot hold an identifier). */
export function sequenceName(schema: string, sequence: string): string {
  return `"${schema.replace(/"/g, '""')}"."${sequence}"`
}

/**
 * A WHERE condition that makes the statement's own transaction commit without waiting for the WAL
 * flush (`synchronous_commit = off` for that transaction only, never for the connection). As an
 * uncorrelated subquery it is evaluated once, before any row is read, so it holds for every row the
 * statement writes.
 */
export function asyncCommit(sql: AnySql): postgres.PendingQuery<postgres.Row[]> {
  return sql`(select set_config('synchronous_commit', 'off', true)) = 'off'`
}
