/**
 * What every statement of jobs/sql takes: a client of the driver (a pool, or a transaction of one,
 * so a statement can join its caller's transaction) and the schema as an identifier. Each file of
 * this folder holds one operation, named after it, and returns typed rows.
 */
import type { Sql } from '../../db/connect.js'
import type { JobSql } from '../types.js'

export type { SchemaName } from '../../db/schema.js'

export type Client = Sql | JobSql

/** The client as a template tag: pools and transactions take the same statements. */
export function tag(sql: Client): Sql {
  return sql as Sql
}
