/**
 * Numbered SQL migrations (`NNN_name.sql`), applied in order inside one transaction under a
 * transaction-level advisory lock, so N instances starting together migrate exactly once and the
 * others wait, then find nothing to do.
 */
import { readdir, readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ChorusError } from '../errors.js'
import type { Sql } from './connect.js'

export interface Migration {
  readonly version: number
  readonly name: string
  readonly sql: string
}

export interface MigrateResult {
  /** Migrations this call applied (empty when another instance had already done it). */
  readonly applied: readonly Migration[]
  readonly version: number
}

const dir = join(dirname(fileURLToPath(import.meta.url)), 'migrations')

export async function loadMigrations(): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((f) => /^\d{3}_[a-z0-9_]+\.sql$/.test(f)).sort()
  return Promise.all(
    files.map(async (file) => ({
      version: Number(file.slice(0, 3)),
      name: file.slice(4, -4),
      sql: await readFile(join(dir, file), 'utf8'),
    })),
  )
}

export async function migrate(sql: Sql, schema: string, appliedBy: string): Promise<MigrateResult> {
  const migrations = await loadMigrations()
  const latest = migrations.at(-1)?.version ?? 0
  return sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(hashtext(${'chorus.migrate:' + schema}))`
    await tx.unsafe(`create schema if not exists "${schema}"`)
    await tx.unsafe(`set local search_path to "${schema}"`)
    await tx.unsafe(`create table if not exists migrations (
      version int primary key,
      name text not null,
      applied_at timestamptz not null default now(),
      applied_by text not null
    )`)
    const [row] = await tx<{ v: number | null }[]>`select max(version) as v from migrations`
    const current = row?.v ?? 0
    if (current > latest) throw new ChorusError('CHORUS_ERR_DB_SCHEMA_TOO_NEW', [schema, current, latest])
    const applied: Migration[] = []
    for (const m of migrations) {
      if (m.version <= current) continue
      try {
        await tx.unsafe(m.sql)
      } catch (err) {
        throw new ChorusError('CHORUS_ERR_DB_MIGRATION_FAILED', [`${m.version}_${m.name}`, (err as Error).message], { cause: err })
      }
      await tx`insert into migrations (version, name, applied_by) values (${m.version}, ${m.name}, ${appliedBy})`
      applied.push(m)
    }
    return { applied, version: Math.max(current, latest) }
  }) as Promise<MigrateResult>
}
