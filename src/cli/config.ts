/**
 * `chorus config get|set|unset|push|diff|history|rollback`: the cluster's shared configuration from
 * the command line, on the connection conventions of every `chorus` command (--database-url,
 * DATABASE_URL or the `chorus up` of this directory; --schema). Writes are validated against every
 * schema the instances registered, recorded with the CLI user as author, and announced on the bus
 * so instances run them at once. Secret values are never printed: `get` and `diff` mask them.
 */
import { readFileSync } from 'node:fs'
import { hostname, userInfo } from 'node:os'
import { type Command, InvalidArgumentError } from 'commander'
import { assemble } from '../assembly.js'
import { channels } from '../bus/channels.js'
import { SecretBox } from '../config/crypto.js'
import { MASK } from '../config/keys.js'
import { differences, entries, formatDifferences, formatEntries } from '../config/display.js'
import { pushed, withRemoved, withSet } from '../config/edits.js'
import { loadDirectory, type Doc, type View } from '../config/sources.js'
import { ConfigStore, type HistoryEntry, type WriteRequest, type WriteResult } from '../config/store.js'
import { validate } from '../config/validate.js'
import { openSql } from '../db/connect.js'
import { ChorusError } from '../errors.js'
import { Events } from '../events.js'
import { createLogger } from '../log.js'
import { locateDatabase } from './locate.js'
import { addSecretFileOptions } from './secrets.js'

interface Common {
  databaseUrl?: string
  schema?: string
  secretFile?: string
  json?: boolean
}

interface Target {
  url: string
  schema: string
  secret: string | null
}

async function target(o: Common): Promise<Target> {
  const found = await locateDatabase(o.databaseUrl)
  const schema = o.schema ?? found.schema ?? process.env.CHORUS_SCHEMA ?? 'chorus'
  return { url: found.url, schema, secret: o.secretFile ?? process.env.CHORUS_SECRET ?? found.secret ?? null }
}

/** Reads with one short-lived client: no bus, no migration. */
async function reading<R>(t: Target, fn: (store: ConfigStore) => Promise<R>): Promise<R> {
  const sql = openSql(t.url, { appName: 'chorus:cli:config', max: 1, prepare: false })
  try {
    return await fn(new ConfigStore({ sql, schema: t.schema, box: t.secret ? new SecretBox(t.secret) : null }))
  } finally {
    await sql.end({ timeout: 1 })
  }
}

/**
 * One write as any writer makes it: migrate if needed, store the version if every registered
 * schema accepts it, and announce it on the bus. `chorus up --config-dir` pushes through here too.
 */
export async function writeConfig(t: Target, req: Omit<WriteRequest, 'validate'>): Promise<WriteResult> {
  const id = `cli-${process.pid}`
  const log = createLogger('silent', { instance: id })
  // The cluster's own foundation (its bus transport included: CHORUS_BUS_URL may name Redis or NATS).
  const foundation = await assemble({
    instanceId: id,
    databaseUrl: t.url,
    directUrl: process.env.CHORUS_DIRECT_URL || null,
    schema: t.schema,
    poolSize: 2,
    migrate: true,
    bus: { url: process.env.CHORUS_BUS_URL || null },
    log,
    events: new Events(log),
  })
  try {
    const store = new ConfigStore({ sql: foundation.db.sql, schema: t.schema, box: t.secret ? new SecretBox(t.secret) : null })
    const result = await store.write({ ...req, validate: (doc, registered) => validate(doc, null, registered) })
    // Instances that miss this notice find the version by their poll within a few seconds.
    if (result.stored) await foundation.bus.publish(channels.config, JSON.stringify({ v: result.version })).catch(() => undefined)
    return result
  } finally {
    await foundation.close()
  }
}

export function cliAuthor(): string {
  let user = 'unknown'
  try {
    user = userInfo().username
  } catch {
    // no passwd entry (containers): keep "unknown"
  }
  return `cli:${user}@${hostname()}`
}

/** What `chorus up --config-dir DIR` calls before starting instances. */
export async function pushConfigDirectory(opts: { databaseUrl: string; schema: string; secret: string | null; dir: string; author?: string }): Promise<WriteResult> {
  const files = await loadDirectory(opts.dir)
  return writeConfig({ url: opts.databaseUrl, schema: opts.schema, secret: opts.secret }, { author: opts.author ?? cliAuthor(), source: 'push', next: (cur) => pushed(cur, files) })
}

/** The first line of a file, as the option's value (a usage error when it cannot be read or is empty). */
function firstLineOf(path: string): string {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new InvalidArgumentError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
  const line = text.split(/\r?\n/, 1)[0]
  if (!line) throw new InvalidArgumentError(`${path} is empty`)
  return line
}

/** The value argument: `-` reads it from stdin (its first line), out of sight of ps. */
async function valueArg(raw: string, secret: boolean): Promise<string> {
  if (raw !== '-') {
    if (secret) process.stderr.write('chorus: warning: a secret value given as an argument is visible to every local user in ps; pass - and write the value on stdin\n')
    return raw
  }
  let text = ''
  for await (const chunk of process.stdin) text += String(chunk)
  return text.split(/\r?\n/, 1)[0] ?? ''
}

function parseValue(raw: string, asString: boolean): unknown {
  if (asString) return raw
  try {
    return JSON.parse(raw) as unknown
  } catch {
    return raw
  }
}

function view(o: { app?: string; profile?: string[] }): View {
  return { app: o.app ?? null, profiles: o.profile ?? [] }
}

function out(json: boolean | undefined, data: unknown, text: string): void {
  process.stdout.write((json ? JSON.stringify(data) : text) + '\n')
}

function written(o: Common, r: WriteResult): void {
  out(o.json, r, r.stored ? `version ${r.version}${r.changed.length ? ` (changed: ${r.changed.join(', ')})` : ''}` : `no change; the configuration stays at version ${r.version}`)
}

const intArg = (what: string, min: number) => (v: string) => {
  const n = Number(v)
  if (!Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`${what} is an integer ≥ ${min}`)
  return n
}

function common(cmd: Command): Command {
  cmd
    .option('--json', 'print JSON')
    .option('--database-url <url>', 'the cluster database (default: env DATABASE_URL, else the `chorus up` of this directory)')
    .option('--schema <name>', 'schema of the Chorus tables')
    .option('--secret-file <path>', 'read the cluster secret (encrypts secret values) from this file (default: env CHORUS_SECRET, else the `chorus up` of this directory)', firstLineOf)
  addSecretFileOptions(cmd)
  return cmd
}

function viewOptions(cmd: Command): Command {
  return cmd
    .option('--app <name>', 'the app whose {app}.yml and {app}-{profile}.yml apply')
    .option('--profile <name>', 'an active profile (repeat for several, lowest precedence first)', (v: string, prev: string[] = []) => [...prev, v])
}

/** Adds `chorus config …` to `program`. */
export function configCommand(program: Command): Command {
  const config = program.command('config').description('the shared configuration: get, set, push a directory, diff, history, rollback')

  viewOptions(common(config.command('get').argument('[key]', 'one key (a leaf or a subtree)'))).description('print the configuration an app with these profiles runs (secrets masked)')
    .option('--at <version>', 'an older version', intArg('a version', 1))
    .action(async (key: string | undefined, o: Common & { app?: string; profile?: string[]; at?: number }) => {
      const t = await target(o)
      const { row, list } = await reading(t, async (store) => {
        const row = await store.read(o.at)
        if (o.at !== undefined && !row) throw new ChorusError('CHORUS_ERR_CONFIG_VERSION_NOT_FOUND', [o.at])
        return { row, list: entries(ConfigStore.masked(row), view(o)) }
      })
      const shown = key === undefined ? list : list.filter((e) => e.key === key || e.key.startsWith(key + '.'))
      const values = Object.fromEntries(shown.map((e) => [e.key, e.value]))
      out(o.json, { version: row?.version ?? 0, view: view(o), values, entries: shown }, `version ${row?.version ?? 0}\n${formatEntries(shown)}`)
    })

  common(config.command('set').argument('<key>').argument('<value>', 'JSON (42, true, "text", [1,2]) or plain text; - reads it from stdin'))
    .description('set a key in the runtime layer, above the files, for every instance')
    .option('--string', 'store the value as text even if it parses as JSON')
    .option('--secret', 'keep this key secret: encrypted at rest, masked everywhere')
    .option('--expect <version>', 'compare-and-set: refuse unless the configuration is at this version', intArg('a version', 0))
    .action(async (key: string, raw: string, o: Common & { string?: boolean; secret?: boolean; expect?: number }) => {
      const t = await target(o)
      const value = parseValue(await valueArg(raw, o.secret === true), o.string === true)
      written(o, await writeConfig(t, { author: cliAuthor(), source: 'set', expectedVersion: o.expect, next: (cur) => withSet(cur, key, value, o.secret === true) }))
    })

  common(config.command('unset').argument('<key>'))
    .description('remove a key from the runtime layer, so the files\' value applies again')
    .option('--expect <version>', 'compare-and-set on the version', intArg('a version', 0))
    .action(async (key: string, o: Common & { expect?: number }) => {
      const t = await target(o)
      written(o, await writeConfig(t, { author: cliAuthor(), source: 'delete', expectedVersion: o.expect, next: (cur) => withRemoved(cur, key) }))
    })

  common(config.command('push').argument('<dir>', 'application.yml, application-{profile}.yml, {app}.yml, {app}-{profile}.yml (YAML or JSON)'))
    .description('replace the configuration files with those of a directory (the runtime layer stays)')
    .option('--expect <version>', 'compare-and-set on the version', intArg('a version', 0))
    .action(async (dir: string, o: Common & { expect?: number }) => {
      const t = await target(o)
      const files = await loadDirectory(dir)
      written(o, await writeConfig(t, { author: cliAuthor(), source: 'push', expectedVersion: o.expect, next: (cur) => pushed(cur, files) }))
    })

  common(config.command('diff').argument('[from]', 'a version (default: the one before <to>)', intArg('a version', 0)).argument('[to]', 'a version (default: the latest)', intArg('a version', 1)))
    .description('what changed between two versions, or what pushing --dir would change (secrets masked)')
    .option('--dir <dir>', 'compare the latest version with the files of this directory')
    .action(async (from: number | undefined, to: number | undefined, o: Common & { dir?: string }) => {
      const t = await target(o)
      const diffs = await reading(t, async (store) => {
        const latest = await store.read(to)
        if (to !== undefined && !latest) throw new ChorusError('CHORUS_ERR_CONFIG_VERSION_NOT_FOUND', [to])
        const b = ConfigStore.masked(latest)
        if (o.dir) {
          const files = await loadDirectory(o.dir)
          return differences(b, maskDoc(pushed(b, files), b))
        }
        const fromVersion = from ?? Math.max(0, (latest?.version ?? 0) - 1)
        const older = fromVersion === 0 ? null : await store.read(fromVersion)
        if (fromVersion !== 0 && !older) throw new ChorusError('CHORUS_ERR_CONFIG_VERSION_NOT_FOUND', [fromVersion])
        return differences(ConfigStore.masked(older), b)
      })
      out(o.json, { differences: diffs }, formatDifferences(diffs))
    })

  common(config.command('history'))
    .description('the versions, newest first: who, when, which keys changed')
    .option('--limit <n>', 'how many', intArg('a limit', 1), 20)
    .action(async (o: Common & { limit: number }) => {
      const t = await target(o)
      const list: HistoryEntry[] = await reading(t, (store) => store.history(Math.min(o.limit, 1000)))
      out(o.json, { versions: list }, list.length === 0 ? 'no versions' : list.map((h) => `${h.version}  ${h.createdAt}  ${h.source.padEnd(8)}  ${h.author}  ${h.changed.join(', ')}`).join('\n'))
    })

  common(config.command('rollback').argument('<version>', 'the version to restore', intArg('a version', 1)))
    .description('store a new version equal to an older one')
    .option('--expect <version>', 'compare-and-set on the current version', intArg('a version', 0))
    .action(async (version: number, o: Common & { expect?: number }) => {
      const t = await target(o)
      written(
        o,
        await writeConfig(t, {
          author: cliAuthor(),
          source: 'rollback',
          expectedVersion: o.expect,
          next: async () => reading(t, async (store) => {
            const row = await store.read(version)
            if (!row) throw new ChorusError('CHORUS_ERR_CONFIG_VERSION_NOT_FOUND', [version])
            return store.open(row)
          }),
        }),
      )
    })
  return config
}

/** The files' secret keys shown masked too, so a diff against a directory never prints them. */
function maskDoc(doc: Doc, masked: Doc): Doc {
  const secrets = new Set([...doc.secrets, ...masked.secrets])
  const sources = Object.fromEntries(Object.entries(doc.sources).map(([n, layer]) => [n, Object.fromEntries(Object.entries(layer).map(([k, v]) => [k, secrets.has(k) ? MASK : v]))]))
  return { sources, secrets }
}
