// One embedded PostgreSQL for the whole run, and a migrated template database that each test
// file clones (CREATE DATABASE … TEMPLATE), so every test starts on its own clean database.
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestProject } from 'vitest/node'
import postgres from 'postgres'
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../src/db/embedded.js'
import { migrate } from '../../src/db/migrate.js'

let pg: EmbeddedPostgres | undefined
let dir: string | undefined

export async function setup(project: TestProject): Promise<void> {
  dir = await mkdtemp(join(tmpdir(), 'chorus-test-'))
  await chmod(dir, 0o755) // the postgres user must reach the data directory
  pg = await startEmbeddedPostgres({
    dataDir: join(dir, 'pg'),
    port: 0,
    settings: { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off', max_connections: '800' },
  })
  const admin = postgres(pg.url, { max: 1, onnotice: () => undefined })
  await admin.unsafe('create database chorus_template')
  await admin.end()
  const tpl = postgres(pg.url.replace(/\/postgres$/, '/chorus_template'), { max: 1, onnotice: () => undefined, connection: { search_path: 'chorus' } })
  await migrate(tpl as never, 'chorus', 'test-setup')
  await tpl.end()
  project.provide('pgUrl', pg.url)
  process.env.CHORUS_TEST_PG_URL = pg.url
}

export async function teardown(): Promise<void> {
  await pg?.stop()
  if (dir) await rm(dir, { recursive: true, force: true })
}

declare module 'vitest' {
  export interface ProvidedContext {
    pgUrl: string
  }
}
