// A real PgBouncer (Debian's 1.18) in transaction mode in front of a PostgreSQL, as a production
// deployment or a managed database puts one: SCRAM authentication against a userlist, no startup
// parameters ignored, run as the `postgres` user (PgBouncer refuses root). Stopped and removed by close().
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { chmod, chown, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import postgres from 'postgres'
import { freeBase } from './ports.js'
import { postgresUser } from '../../src/db/embedded.js'

/** Debian installs it in /usr/sbin, which a non-root PATH may lack. */
const PGBOUNCER = process.env.CHORUS_TEST_PGBOUNCER ?? (existsSync('/usr/sbin/pgbouncer') ? '/usr/sbin/pgbouncer' : 'pgbouncer')

export interface PgBouncer {
  readonly port: number
  /** `server` (a postgres:// URL of the PostgreSQL behind it) with host and port replaced by PgBouncer's. */
  url(database: string): string
  /** Totals of SHOW STATS for one database (transactions and queries served through the pool). */
  stats(database: string): Promise<{ xacts: number; queries: number }>
  readonly output: () => string
  close(): Promise<void>
}

export async function startPgBouncer(server: string, opts: { poolSize?: number; maxClients?: number } = {}): Promise<PgBouncer> {
  const target = new URL(server)
  const user = decodeURIComponent(target.username)
  const password = decodeURIComponent(target.password)
  const ids = await postgresUser()
  const dir = await mkdtemp(join(tmpdir(), 'chorus-pgbouncer-'))
  await chmod(dir, 0o755)
  const port = await freeBase(0)
  const userlist = join(dir, 'userlist.txt')
  const ini = join(dir, 'pgbouncer.ini')
  const q = (s: string) => `"${s.replace(/"/g, '""')}"`
  await writeFile(userlist, `${q(user)} ${q(password)}\n`, { mode: 0o600 })
  await writeFile(
    ini,
    [
      '[databases]',
      `* = host=${target.hostname} port=${target.port}`,
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      'unix_socket_dir =',
      'auth_type = scram-sha-256',
      `auth_file = ${userlist}`,
      `admin_users = ${user}`,
      'pool_mode = transaction',
      `max_client_conn = ${opts.maxClients ?? 400}`,
      `default_pool_size = ${opts.poolSize ?? 20}`,
      'log_connections = 0',
      'log_disconnections = 0',
      '',
    ].join('\n'),
    { mode: 0o600 },
  )
  if (ids.uid !== undefined) {
    await chown(userlist, ids.uid, ids.gid!)
    await chown(ini, ids.uid, ids.gid!)
  }

  const child: ChildProcess = spawn(PGBOUNCER, [ini], { ...ids, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`pgbouncer did not start:\n${out}`)), 30_000)
    const onLine = (line: string) => {
      out += line + '\n'
      if (/listening on 127\.0\.0\.1:\d+/.test(line)) {
        clearTimeout(timer)
        resolve()
      }
    }
    createInterface({ input: child.stdout! }).on('line', onLine)
    createInterface({ input: child.stderr! }).on('line', onLine)
    child.once('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`pgbouncer exited with ${code}:\n${out}`))
    })
  }).catch(async (err) => {
    await rm(dir, { recursive: true, force: true })
    throw err
  })

  const url = (database: string) => {
    const u = new URL(server)
    u.host = `127.0.0.1:${port}`
    u.pathname = `/${database}`
    return u.toString()
  }
  return {
    port,
    url,
    output: () => out,
    async stats(database) {
      // The admin console speaks the simple query protocol only.
      const admin = postgres(url('pgbouncer'), { max: 1, fetch_types: false, onnotice: () => undefined })
      try {
        const rows = await admin.unsafe('SHOW STATS').simple()
        const row = rows.find((r) => r.database === database)
        return { xacts: Number(row?.total_xact_count ?? 0), queries: Number(row?.total_query_count ?? 0) }
      } finally {
        await admin.end({ timeout: 1 })
      }
    },
    async close() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      const force = setTimeout(() => child.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(force)
      await rm(dir, { recursive: true, force: true })
    },
  }
}
