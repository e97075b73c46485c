// Test databases: each call makes a new database on the run's embedded PostgreSQL, cloned from the
// migrated template (or empty, for migration tests). Dropped by `drop()`.
import { randomBytes } from 'node:crypto'
import postgres from 'postgres'
import { inject } from 'vitest'

export interface TestDatabase {
  readonly url: string
  readonly name: string
  /** A client on the test database, search_path set to the chorus schema. */
  readonly sql: postgres.Sql
  drop(): Promise<void>
}

export function serverUrl(): string {
  return inject('pgUrl')
}

export async function testDatabase(opts: { empty?: boolean } = {}): Promise<TestDatabase> {
  const base = serverUrl()
  const name = `t_${randomBytes(6).toString('hex')}`
  const admin = postgres(base, { max: 1, onnotice: () => undefined })
  await admin.unsafe(`create database ${name}${opts.empty ? '' : ' template chorus_template'}`)
  await admin.end()
  const url = base.replace(/\/postgres$/, `/${name}`)
  const sql = postgres(url, { max: 4, onnotice: () => undefined, connection: { search_path: 'chorus' } })
  return {
    url,
    name,
    sql,
    async drop() {
      await sql.end({ timeout: 1 })
      const a = postgres(base, { max: 1, onnotice: () => undefined })
      await a.unsafe(`drop database if exists ${name} with (force)`).catch(() => undefined)
      await a.end()
    },
  }
}
