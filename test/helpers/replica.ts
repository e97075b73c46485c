// Debian's PostgreSQL 15 as an operator runs it: a primary made with initdb and a streaming standby
// made with pg_basebackup -R, driven by pg_ctl (start, stop, promote) as the `postgres` user.
// Trust authentication on 127.0.0.1 only; no Unix sockets, so parallel runs cannot collide.
import { execFile } from 'node:child_process'
import { chmod, chown, mkdir, mkdtemp, readFile, rm, appendFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import postgres from 'postgres'
import { postgresUser, type Ids } from '../../src/db/embedded.js'
import { freeBase } from './ports.js'

const run = promisify(execFile)
export const PG_BIN = process.env.CHORUS_TEST_PG_BIN ?? '/usr/lib/postgresql/15/bin'

/** A directory the `postgres` user owns (mode 700 unless told otherwise). */
export async function ownedDir(path: string, ids: Ids, mode = 0o700): Promise<string> {
  await mkdir(path, { recursive: true, mode })
  await chmod(path, mode)
  if (ids.uid !== undefined) await chown(path, ids.uid, ids.gid!)
  return path
}

export interface PgServer {
  readonly name: string
  readonly port: number
  readonly dataDir: string
  /** `postgres://postgres@127.0.0.1:<port>/<database>` */
  url(database?: string): string
  start(): Promise<void>
  /** `pg_ctl stop -m <mode>`; resolves when the server has exited. No-op when it is not running. */
  stop(mode?: 'smart' | 'fast' | 'immediate'): Promise<void>
  /** `pg_ctl promote -w`: resolves once the standby accepts writes. */
  promote(): Promise<void>
  /** The last lines of the server log. */
  log(): Promise<string>
}

export interface ReplicaPair {
  readonly primary: PgServer
  readonly standby: PgServer
  /** A multi-host URL naming both servers, that follows whichever accepts writes. */
  url(database: string): string
  /** Stops both servers and removes every file. */
  close(): Promise<void>
}

function server(name: string, dataDir: string, logFile: string, port: number, ids: Ids): PgServer {
  const pgCtl = (args: string[]) => run(join(PG_BIN, 'pg_ctl'), ['-D', dataDir, ...args], { ...ids, env: { ...process.env, LC_ALL: 'C' } })
  let running = false
  return {
    name,
    port,
    dataDir,
    url: (database = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${database}`,
    async start() {
      await pgCtl(['-l', logFile, '-w', '-t', '60', 'start'])
      running = true
    },
    async stop(mode = 'fast') {
      if (!running) return
      running = false
      await pgCtl(['-m', mode, '-w', '-t', '60', 'stop']).catch(() => undefined)
    },
    async promote() {
      await pgCtl(['-w', '-t', '60', 'promote'])
    },
    async log() {
      return (await readFile(logFile, 'utf8').catch(() => '')).split('\n').slice(-40).join('\n')
    },
  }
}

/**
 * A primary and a standby streaming from it, both started. `settings` go into the primary's
 * postgresql.conf before the base backup, so the standby runs with the same ones.
 */
export async function startReplicaPair(settings: Record<string, string> = {}): Promise<ReplicaPair> {
  const ids = await postgresUser()
  const dir = await mkdtemp(join(tmpdir(), 'chorus-replica-'))
  await chmod(dir, 0o755) // the postgres user must reach the data directories
  const logs = await ownedDir(join(dir, 'logs'), ids, 0o755)
  const base = await freeBase(1)
  const primary = server('primary', join(dir, 'primary'), join(logs, 'primary.log'), base, ids)
  const standby = server('standby', join(dir, 'standby'), join(logs, 'standby.log'), base + 1, ids)
  const close = async () => {
    await standby.stop('immediate')
    await primary.stop('immediate')
    await rm(dir, { recursive: true, force: true })
  }
  try {
    await ownedDir(primary.dataDir, ids)
    await run(join(PG_BIN, 'initdb'), ['-D', primary.dataDir, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--locale=C', '--no-sync'], {
      ...ids,
      env: { ...process.env, LC_ALL: 'C' },
    })
    const conf = (port: number, extra: Record<string, string>) =>
      '\n' +
      Object.entries({ listen_addresses: '127.0.0.1', port: String(port), unix_socket_directories: '', ...extra })
        .map(([k, v]) => `${k} = '${v.replace(/'/g, "''")}'`)
        .join('\n') +
      '\n'
    await appendFile(join(primary.dataDir, 'postgresql.conf'), conf(primary.port, settings))
    await primary.start()

    // initdb's pg_hba.conf already trusts replication connections from 127.0.0.1.
    await ownedDir(standby.dataDir, ids)
    await run(join(PG_BIN, 'pg_basebackup'), ['-h', '127.0.0.1', '-p', String(primary.port), '-U', 'postgres', '-D', standby.dataDir, '-R', '-X', 'stream', '-c', 'fast', '--no-sync'], {
      ...ids,
      env: { ...process.env, LC_ALL: 'C' },
    })
    // Later lines win: the standby listens on its own port.
    await appendFile(join(standby.dataDir, 'postgresql.conf'), conf(standby.port, {}))
    await standby.start()
  } catch (err) {
    const detail = [await primary.log(), await standby.log()].join('\n')
    await close()
    throw new Error(`could not build the replica pair: ${(err as Error).message}\n${detail}`)
  }
  return {
    primary,
    standby,
    url: (database) => `postgres://postgres@127.0.0.1:${primary.port},127.0.0.1:${standby.port}/${database}?target_session_attrs=read-write`,
    close,
  }
}

/**
 * Makes the standby synchronous: from then on a COMMIT on the primary returns only once the standby
 * has the commit record, so what a client saw committed survives the primary's loss. Set with ALTER
 * SYSTEM on the primary alone (not copied to the standby, which would otherwise wait for a standby
 * of its own once promoted). Resolves when the standby reports itself synchronous.
 */
export async function makeSynchronous(pair: ReplicaPair): Promise<void> {
  const sql = postgres(pair.primary.url(), { max: 1, onnotice: () => undefined })
  try {
    await sql`alter system set synchronous_standby_names = '*'`
    await sql`select pg_reload_conf()`
    for (let i = 0; i < 300; i++) {
      const [row] = await sql`select sync_state from pg_stat_replication limit 1`
      if (row?.sync_state === 'sync') return
      await new Promise((r) => setTimeout(r, 100))
    }
    throw new Error('the standby did not become synchronous')
  } finally {
    await sql.end({ timeout: 1 })
  }
}
