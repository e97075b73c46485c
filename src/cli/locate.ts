/**
 * How a `chorus` command finds its cluster: `--database-url`, else `DATABASE_URL`, else the cluster
 * that `chorus up` started in this directory (`.chorus/up.json`), else a running embedded server
 * in `.chorus/postgres`; and checks that it answers, so a bad URL ends in one CHORUS_ERR_DB_CONNECT.
 */
import { readFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { openSql } from '../db/connect.js'
import { connectError, parseTarget, singleHostUrls } from '../db/connect-error.js'
import { findEmbedded } from '../db/embedded.js'
import { ChorusError } from '../errors.js'
import { processAlive } from '../processes.js'

export const STATE_DIR = '.chorus'
export const UP_FILE = join(STATE_DIR, 'up.json')

export interface UpState {
  databaseUrl: string
  schema: string
  /** The cluster secret `chorus up` generated, so sibling commands (balancer) can sign cookies. */
  secret?: string
  pid: number
  startedAt: string
  instances: { id: string; port: number; url: string }[]
  balancerUrl?: string
  dashboardUrl?: string
}

export async function readUpState(cwd = process.cwd()): Promise<UpState | null> {
  try {
    const state = JSON.parse(await readFile(resolve(cwd, UP_FILE), 'utf8')) as UpState
    return processAlive(state.pid) ? state : null
  } catch {
    return null
  }
}

export async function locateDatabase(explicit: string | undefined, cwd = process.cwd()): Promise<{ url: string; schema?: string; secret?: string }> {
  const found = await find(explicit, cwd)
  await reachDatabase(found.url)
  await reachDirect(found.url)
  return found
}

async function find(explicit: string | undefined, cwd: string): Promise<{ url: string; schema?: string; secret?: string }> {
  if (explicit) return { url: explicit }
  if (process.env.DATABASE_URL) return { url: process.env.DATABASE_URL }
  const up = await readUpState(cwd)
  if (up) return { url: up.databaseUrl, schema: up.schema, ...(up.secret ? { secret: up.secret } : {}) }
  const embedded = await findEmbedded(resolve(cwd, STATE_DIR, 'postgres'))
  if (embedded) return { url: embedded }
  throw new ChorusError('CHORUS_ERR_CLI_NO_CLUSTER')
}

/** `CHORUS_DIRECT_URL`, when set apart from `url`, must answer too: migrations and LISTEN go through it. */
export async function reachDirect(url: string): Promise<void> {
  const direct = process.env.CHORUS_DIRECT_URL
  if (direct && direct !== url) await reachDatabase(direct)
}

/**
 * One query on one connection, to each host of a multi-host URL in turn until one answers: throws
 * CHORUS_ERR_DB_CONNECT (not a PostgreSQL URL, refused, unknown host, wrong password, no such
 * database, timed out…) before a command builds anything on the URL.
 */
export async function reachDatabase(url: string): Promise<void> {
  if (!parseTarget(url)) throw connectError(url, null)
  const urls = singleHostUrls(url)
  const errors: unknown[] = []
  for (const one of urls) {
    try {
      await selectOne(one)
      return
    } catch (err) {
      errors.push(err)
    }
  }
  throw connectError(url, urls.length === 1 ? errors[0] : new AggregateError(errors, 'no host answered'))
}

async function selectOne(url: string): Promise<void> {
  const sql = openSql(url, { appName: 'chorus:cli:probe', max: 1, prepare: false })
  try {
    await sql`select 1`
  } finally {
    await sql.end({ timeout: 0 }).catch(() => undefined)
  }
}
