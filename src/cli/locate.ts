/**
 * How a `chorus` command finds its cluster: `--database-url`, else `DATABASE_URL`, else the cluster
 * that `chorus up` started in this directory (`.chorus/up.json`), else a running embedded server
 * in `.chorus/postgres`.
 */
import { readFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
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
  if (explicit) return { url: explicit }
  if (process.env.DATABASE_URL) return { url: process.env.DATABASE_URL }
  const up = await readUpState(cwd)
  if (up) return { url: up.databaseUrl, schema: up.schema, ...(up.secret ? { secret: up.secret } : {}) }
  const embedded = await findEmbedded(resolve(cwd, STATE_DIR, 'postgres'))
  if (embedded) return { url: embedded }
  throw new ChorusError('CHORUS_ERR_CLI_NO_CLUSTER')
}
