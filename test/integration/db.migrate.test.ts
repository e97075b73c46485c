import postgres from 'postgres'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Sql } from '../../src/db/connect.js'
import { loadMigrations, migrate } from '../../src/db/migrate.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

describe('migrations', () => {
  let db: TestDatabase
  const clients: postgres.Sql[] = []
  const client = (): Sql => {
    const c = postgres(db.url, { max: 1, onnotice: () => undefined })
    clients.push(c)
    return c as unknown as Sql
  }

  beforeEach(async () => {
    db = await testDatabase({ empty: true })
  })
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.end({ timeout: 1 })))
    await db.drop()
  })

  it('are numbered files applied in order, recorded once each, and a second run applies nothing', async () => {
    const all = await loadMigrations()
    expect(all.length).toBeGreaterThanOrEqual(2)
    expect(all.map((m) => m.version)).toEqual([...all.map((m) => m.version)].sort((a, b) => a - b))

    const first = await migrate(client(), 'chorus', 'one')
    expect(first.applied.map((m) => m.version)).toEqual(all.map((m) => m.version))
    expect(first.version).toBe(all.at(-1)!.version)
    const second = await migrate(client(), 'chorus', 'two')
    expect(second.applied).toEqual([])
    expect(second.version).toBe(first.version)

    const rows = await db.sql<{ version: number; name: string; applied_by: string }[]>`select version, name, applied_by from chorus.migrations order by version`
    expect(rows).toEqual(all.map((m) => ({ version: m.version, name: m.name, applied_by: 'one' })))
  })

  it('run exactly once when ten callers start together', async () => {
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => migrate(client(), 'chorus', `caller-${i}`)))
    const appliers = results.filter((r) => r.applied.length > 0)
    expect(appliers).toHaveLength(1)
    const rows = await db.sql<{ version: number; n: number; by: string[] }[]>`
      select version, count(*)::int as n, array_agg(applied_by) as by from chorus.migrations group by version order by version`
    expect(rows.every((r) => r.n === 1)).toBe(true)
    expect(new Set(rows.flatMap((r) => r.by)).size).toBe(1)
  })

  it('go into the schema named by the option', async () => {
    await migrate(client(), 'tenant_a', 'one')
    const tables = await db.sql<{ table_name: string }[]>`
      select table_name from information_schema.tables where table_schema = 'tenant_a' order by table_name`
    expect(tables.map((t) => t.table_name)).toEqual(expect.arrayContaining(['bus_payloads', 'members', 'migrations']))
    const inDefault = await db.sql`select 1 from information_schema.tables where table_schema = 'chorus'`
    expect(inDefault).toHaveLength(0)
  })

  it('refuse a schema migrated by a newer version with CHORUS_ERR_DB_SCHEMA_TOO_NEW, changing nothing', async () => {
    await migrate(client(), 'chorus', 'one')
    await db.sql`insert into chorus.migrations (version, name, applied_by) values (999, 'from_the_future', 'newer')`
    await expect(migrate(client(), 'chorus', 'two')).rejects.toMatchObject({ code: 'CHORUS_ERR_DB_SCHEMA_TOO_NEW' })
    const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from chorus.migrations`
    expect(row!.n).toBe((await loadMigrations()).length + 1)
  })
})
