// The chaos run's own embedded PostgreSQL: started in the run's directory on a free port, stopped
// (fast shutdown: every connection is cut) or crashed (immediate shutdown) and started again on the
// same port and data; and the application's tables the chaos instances write their history to.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import postgres from 'postgres'
import { startEmbeddedPostgres } from '../../dist/db/embedded.js'

/**
 * When the server logged that it accepts connections, by its own clock (the machine's): a busy
 * supervisor may read that line late, and recovery times are measured from it.
 */
function readyTime(line) {
  const m = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d\.\d+) (UTC|GMT) .*ready to accept connections/.exec(line)
  return m ? Date.parse(`${m[1]}T${m[2]}Z`) : null
}

export async function startDatabase(dir) {
  const dataDir = join(dir, 'pg')
  const settings = { max_connections: '300' }
  let readyAt = null
  const onLog = (line) => {
    if (line.includes('ready to accept connections')) readyAt = readyTime(line) ?? Date.now()
  }
  let pg = await startEmbeddedPostgres({ dataDir, port: 0, settings, onLog })
  const { url, port } = pg
  let down = false
  return {
    url,
    get down() {
      return down
    },
    /** Fast shutdown; resolves once the server has exited. */
    async stop() {
      down = true
      await pg.stop()
    },
    /**
     * Immediate shutdown (SIGQUIT to the postmaster), as after a crash: no checkpoint, so the next
     * start recovers from the WAL and empties unlogged tables. Resolves once the server has exited.
     */
    async crash() {
      down = true
      const pid = Number((await readFile(join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0])
      process.kill(pid, 'SIGQUIT')
      await pg.stop()
    },
    /** Starts the server again on the same port and data; resolves, once it accepts connections, with when it began to. */
    async start() {
      readyAt = null
      pg = await startEmbeddedPostgres({ dataDir, port, settings, onLog })
      down = false
      return readyAt ?? Date.now()
    },
    async close() {
      await pg.stop()
    },
    /** A short-lived client for the supervisor. */
    client() {
      return postgres(url, { max: 2, onnotice: () => undefined })
    },
  }
}

/**
 * The application side of the run: `fence` holds, per lock name, the last token written (a write with
 * an older token is refused) and the count of accepted writes; `fence_writes` every attempt; and
 * `tx_effects` the row each transactional job writes in its own transaction.
 */
export async function createAppSchema(sql) {
  await sql.unsafe(`
    create schema chaos;
    create table chaos.fence (name text primary key, last_token bigint not null default 0, seq bigint not null default 0);
    insert into chaos.fence (name) values ('fence-a'), ('fence-b');
    create table chaos.fence_writes (
      id bigint generated always as identity primary key,
      name text not null, token bigint not null, run text not null, kind text not null,
      accepted boolean not null, seq bigint, at timestamptz not null);
    create table chaos.tx_effects (job_id bigint not null, run text not null, at timestamptz not null default clock_timestamp());
  `)
}
