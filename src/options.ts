/**
 * Every option of `createCluster`, its default and its meaning, in one place. Precedence: an
 * explicit option beats the environment, which beats the preset, which beats the default.
 * Options are validated once (an error names the offending option) and then frozen.
 */
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { resolve } from 'node:path'
import type { Logger } from 'pino'
import { z } from 'zod'
import { busKind, isTransport } from './bus/select.js'
import type { Transport } from './bus/transport.js'
import type { ConfigOptions } from './config/options.js'
import { ChorusError } from './errors.js'
import { optionError } from './util/parse-options.js'

export interface ClusterOptions {
  /** PostgreSQL URL. Default: env `DATABASE_URL`; when absent, an embedded PostgreSQL is started. */
  databaseUrl?: string
  /**
   * A direct (session) URL for what a pooler in transaction mode cannot carry: the bus's LISTEN and
   * the migration lock. Give it when `databaseUrl` points at PgBouncer or a managed database's
   * pooler. Default: env `CHORUS_DIRECT_URL`, else `databaseUrl` is used for everything (and must
   * then be a real session, which start-up checks). See docs/operations.md.
   */
  directUrl?: string
  /** Unique among live members. Default: env `CHORUS_INSTANCE_ID`, else `<host>-<pid>`. */
  instanceId?: string
  /** Where peers and the balancer reach this instance. Default: env `CHORUS_ADVERTISE_URL`, else `http://127.0.0.1:$PORT` when `PORT` is set. */
  advertiseUrl?: string
  /** Roles of this instance; jobs, cron and singletons may be restricted to roles. Default: env `CHORUS_ROLES` (comma-separated), else none. */
  roles?: string[]
  /** Free-form JSON metadata shown to peers and on the dashboard. Default: `{}`. */
  metadata?: Record<string, unknown>
  /** Signs inter-node traffic and cookies. Default: env `CHORUS_SECRET`; required unless the preset is `local`, which generates one. */
  secret?: string
  /** `local` (one machine, generated secret) or `lan`. Default: env `CHORUS_PRESET`, else `local` when the database is embedded and `lan` otherwise. */
  preset?: 'local' | 'lan'
  /** Schema holding every Chorus table. Default: env `CHORUS_SCHEMA`, else `chorus`. */
  schema?: string
  /** Apply pending migrations on start. Default: `true`. */
  migrate?: boolean
  /** Interval between heartbeats. Default: 500 ms (local), 1000 ms (lan); env `CHORUS_HEARTBEAT_MS`. */
  heartbeatMs?: number
  /** A member whose heartbeat is older than this (database time) is declared down. Default: 2500 ms (local), 5000 ms (lan); env `CHORUS_FAIL_AFTER_MS`. */
  failAfterMs?: number
  /** An instance that could not renew for `failAfterMs - fenceMarginMs` isolates itself, before peers may take its work over. Default: 700 ms (local), 1500 ms (lan). */
  fenceMarginMs?: number
  /** When more than this fraction of the other live members expire at once, they are declared down only after a second `failAfterMs` (self-preservation). Default: 0.5. */
  burstRatio?: number
  /** Connections in the work pool. Default: 10. */
  poolSize?: number
  /**
   * `close()` finishes within this deadline whatever the database does (down, hanging, refusing):
   * what could not be released by then is logged, and peers see this instance expire as after a
   * kill. Jobs and singletons get at most 40 % of it (and at most 10 s) to finish before they are
   * aborted and handed back. Default: 25 000 ms (inside the 30 s a Kubernetes pod or a systemd
   * unit allows by default); env `CHORUS_CLOSE_TIMEOUT_MS`.
   */
  closeTimeoutMs?: number
  /** Embedded PostgreSQL, used when no database URL is given. */
  embedded?: {
    /** Data directory. Default: env `CHORUS_DATA_DIR`, else `./.chorus/postgres`. */
    dataDir?: string
    /** TCP port on 127.0.0.1. Default: env `CHORUS_PG_PORT`, else a free port. */
    port?: number
  }
  /**
   * Shared configuration (`cluster.config`): a zod `schema` every version must pass, the `app` and
   * `profiles` whose files apply (env `CHORUS_APP`, `CHORUS_PROFILES`), `secretKeys`. See docs/config.md.
   */
  config?: ConfigOptions
  /**
   * The bus transport, for tests and single-process use (`new MemoryTransport(hub)`) or a transport
   * of your own. Default: chosen by `bus.url`.
   */
  transport?: Transport
  bus?: {
    /**
     * Where messages between instances travel: `postgres://…` (the default: LISTEN/NOTIFY on the
     * cluster's own database), `redis://…`, `nats://…` or `memory:` (one process). PostgreSQL stays
     * the source of truth either way. Default: env `CHORUS_BUS_URL`. See docs/transports.md.
     */
    url?: string
    /** Largest message accepted by `publish`. Default: 1 MiB. */
    maxPayloadBytes?: number
    /** Bytes waiting to be sent before `publish` refuses. Default: 16 MiB. */
    maxQueueBytes?: number
    /** How long payloads sent by reference stay readable. Default: 60 000 ms. */
    payloadRetentionMs?: number
  }
  /** Shared files (`cluster.files`): a directory every instance mounts (NFS or alike). See docs/files.md. */
  files?: {
    /** The root directory, the shared mount. Default: env `CHORUS_FILES_ROOT`, else `./.chorus/files`. */
    root?: string
    /** Largest file `write` accepts; a stream is cut off as soon as it passes this. Default: 100 MiB; env `CHORUS_FILES_MAX_FILE_BYTES`. */
    maxFileBytes?: number
    /** A temporary file untouched for this long is swept even when its writer still looks alive. Default: 6 hours. */
    tempMaxAgeMs?: number
  }
  /** Signed HTTP between instances (`cluster.rpc`). See docs/rpc.md. */
  rpc?: {
    /** The reserved URL path; each method is served at `<path>/<method>`. Default: `/_chorus/rpc`. */
    path?: string
    /** Largest request or answer body. Default: 1 MiB. */
    maxBodyBytes?: number
    /** Deadline of `call` and `broadcast` unless they are given one. Default: 5000 ms; env `CHORUS_RPC_TIMEOUT_MS`. */
    timeoutMs?: number
    /** A request stamped further than this from the receiver's clock is refused. Default: 30 000 ms. */
    windowMs?: number
    /** Nonces remembered against replay; past this many, the oldest are forgotten and requests not newer than them are refused. Default: 100 000. */
    maxNonces?: number
    /** PEM certificate(s) of the authority that signed the peers' HTTPS certificates, trusted instead of the system's. Default: the file named by env `CHORUS_RPC_CA_FILE`, else none. */
    ca?: string
  }
  /** A pino logger to use. Default: a new pino logger at `logLevel`. */
  logger?: Logger
  /** Log level of the default logger. Default: env `CHORUS_LOG_LEVEL`, else `info`. */
  logLevel?: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'
}

const presets = {
  local: { heartbeatMs: 500, failAfterMs: 2500, fenceMarginMs: 700 },
  lan: { heartbeatMs: 1000, failAfterMs: 5000, fenceMarginMs: 1500 },
} as const

/** Bus limits every process uses unless told otherwise (instances, balancer, dashboard). */
export const busDefaults = { maxPayloadBytes: 1024 * 1024, maxQueueBytes: 16 * 1024 * 1024, payloadRetentionMs: 60_000 } as const

// One grammar for names (instance ids, roles): letters, digits and . _ : @ -, starting with a letter or digit.
const name = z
  .string()
  .min(1, 'must not be empty')
  .max(128, 'must be at most 128 characters')
  .regex(/^[A-Za-z0-9][A-Za-z0-9._:@-]*$/, 'use letters, digits and . _ : @ - only')
const ms = z.number().int('must be an integer').positive('must be positive')
const pgUrl = z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// URL')
// The bus URL grammar is the transport selector's own (src/bus/select.ts).
const busUrl = z.string().superRefine((url, ctx) => {
  try {
    busKind(url)
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message })
  }
})

/**
 * The one schema of the resolved options (every field present): the input is checked against its
 * partial form (unknown keys refused by the schema itself), the resolved value against it whole.
 */
const groups = {
  embedded: z.strictObject({ dataDir: z.string().min(1), port: z.number().int().min(0).max(65535) }),
  bus: z.strictObject({
    url: busUrl.nullable(),
    maxPayloadBytes: ms.max(64 * 1024 * 1024, 'must be at most 64 MiB'),
    maxQueueBytes: ms,
    payloadRetentionMs: ms,
  }),
  files: z.strictObject({
    root: z.string().min(1, 'must not be empty'),
    maxFileBytes: ms,
    tempMaxAgeMs: ms.min(1000, 'must be at least 1000'),
  }),
  rpc: z.strictObject({
    path: z.string().regex(/^(\/[A-Za-z0-9._~-]+)+$/, 'must be a URL path like /_chorus/rpc (no trailing /)'),
    maxBodyBytes: ms.max(64 * 1024 * 1024, 'must be at most 64 MiB'),
    timeoutMs: ms.max(2_147_483_647, 'must fit a timer'),
    windowMs: ms.min(1000, 'must be at least 1000'),
    maxNonces: ms.min(100, 'must be at least 100'),
    ca: z.string().includes('-----BEGIN ', { message: 'must be PEM text (-----BEGIN CERTIFICATE-----…)' }).nullable(),
  }),
}

const fields = {
  databaseUrl: pgUrl.nullable(),
  directUrl: pgUrl.nullable(),
  instanceId: name,
  advertiseUrl: z.url('must be an absolute http(s) URL').regex(/^https?:\/\//, 'must be http or https').nullable(),
  roles: z.array(name).max(32, 'at most 32 roles'),
  metadata: z.record(z.string(), z.unknown()).refine((m) => jsonSize(m) <= 8192, 'must serialise to at most 8 KiB of JSON'),
  secret: z.string().min(16, 'must be at least 16 characters'),
  preset: z.enum(['local', 'lan']),
  schema: z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a lower-case SQL identifier'),
  migrate: z.boolean(),
  heartbeatMs: ms.min(50, 'must be at least 50'),
  failAfterMs: ms,
  fenceMarginMs: ms,
  burstRatio: z.number().gt(0, 'must be above 0').lte(1, 'must be at most 1'),
  poolSize: ms.max(100, 'must be at most 100'),
  closeTimeoutMs: ms.min(100, 'must be at least 100').max(600_000, 'must be at most 600000'),
  // Checked in depth by the config subsystem when the cluster starts (CHORUS_ERR_OPTIONS_INVALID naming `config.<key>`).
  config: z.custom<ConfigOptions>((v) => v !== null && typeof v === 'object' && !Array.isArray(v), 'must be an object'),
  transport: z.custom<Transport>((v) => v === null || isTransport(v), 'must be a Transport (start, send, close)').nullable(),
  logger: z.custom<Logger>((v) => v === null || (typeof v === 'object' && typeof (v as Logger).info === 'function'), 'must be a pino logger').nullable(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  ...groups,
}

const resolvedSchema = z.strictObject(fields).superRefine((o, ctx) => {
  if (o.directUrl !== null && o.databaseUrl === null) {
    ctx.addIssue({ code: 'custom', path: ['directUrl'], message: 'needs databaseUrl (or env DATABASE_URL): it is the session URL beside a pooled one' })
  }
  if (o.failAfterMs < 2 * o.heartbeatMs) {
    ctx.addIssue({ code: 'custom', path: ['failAfterMs'], message: `must be at least twice heartbeatMs (${o.heartbeatMs})` })
  }
  if (o.fenceMarginMs >= o.failAfterMs - o.heartbeatMs) {
    ctx.addIssue({ code: 'custom', path: ['fenceMarginMs'], message: 'must leave more than one heartbeat before failAfterMs' })
  }
})

const inputSchema = z
  .strictObject({
    ...fields,
    embedded: groups.embedded.partial(),
    bus: groups.bus.partial(),
    files: groups.files.partial(),
    rpc: groups.rpc.partial(),
  })
  .partial()

type DeepReadonly<T> = T extends Logger | Transport | ConfigOptions ? T : T extends object ? { readonly [K in keyof T]: DeepReadonly<T[K]> } : T

/** The options after defaults, environment and validation; frozen. */
export type ResolvedOptions = DeepReadonly<z.output<typeof resolvedSchema>>

// The documented interface above and the schema cannot drift apart: the same names, group by group.
type Accepted = z.input<typeof inputSchema>
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false
type KeysOf<T> = keyof NonNullable<T>
const interfaceMatchesSchema: Same<keyof ClusterOptions, keyof Accepted> &
  Same<KeysOf<ClusterOptions['bus']>, KeysOf<Accepted['bus']>> &
  Same<KeysOf<ClusterOptions['embedded']>, KeysOf<Accepted['embedded']>> &
  Same<KeysOf<ClusterOptions['files']>, KeysOf<Accepted['files']>> &
  Same<KeysOf<ClusterOptions['rpc']>, KeysOf<Accepted['rpc']>> = true
void interfaceMatchesSchema

function jsonSize(value: unknown): number {
  try {
    return Buffer.byteLength(JSON.stringify(value) ?? '')
  } catch {
    return Number.POSITIVE_INFINITY
  }
}

function envInt(env: NodeJS.ProcessEnv, key: string): number | undefined {
  const raw = env[key]
  if (raw === undefined || raw === '') return undefined
  const n = Number(raw)
  if (!Number.isFinite(n)) throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', [key, `"${raw}" is not a number`], { details: { option: key } })
  return n
}

function envStr(env: NodeJS.ProcessEnv, key: string): string | undefined {
  const raw = env[key]
  return raw === undefined || raw === '' ? undefined : raw
}

function envFile(env: NodeJS.ProcessEnv, key: string): string | undefined {
  const path = envStr(env, key)
  if (path === undefined) return undefined
  try {
    return readFileSync(path, 'utf8')
  } catch (err) {
    throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', [key, `cannot read ${path}: ${(err as Error).message}`], { details: { option: key } })
  }
}

/** Validates and freezes the options; throws `CHORUS_ERR_OPTIONS_INVALID` naming the first bad option. */
export function resolveOptions(input: ClusterOptions = {}, env: NodeJS.ProcessEnv = process.env): ResolvedOptions {
  // The input first: nested groups are filled key by key below, so a misspelt or misplaced key
  // would otherwise vanish.
  const given = inputSchema.safeParse(input)
  if (!given.success) throw optionError(given.error.issues[0]!, input)
  const databaseUrl = input.databaseUrl ?? envStr(env, 'DATABASE_URL') ?? null
  const presetName = input.preset ?? (envStr(env, 'CHORUS_PRESET') as 'local' | 'lan' | undefined) ?? (databaseUrl ? 'lan' : 'local')
  // Checked first: the secret's default depends on the preset, so a bad preset must not be reported as a missing secret.
  if (!Object.hasOwn(presets, presetName)) {
    throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', ['preset', `"${String(presetName)}" is not one of "local", "lan"`], { details: { option: 'preset' } })
  }
  const preset = presets[presetName]
  const port = envStr(env, 'PORT')
  const envRoles = envStr(env, 'CHORUS_ROLES')
  const candidate = {
    databaseUrl,
    directUrl: input.directUrl ?? envStr(env, 'CHORUS_DIRECT_URL') ?? null,
    instanceId: input.instanceId ?? envStr(env, 'CHORUS_INSTANCE_ID') ?? `${hostname()}-${process.pid}`,
    advertiseUrl: input.advertiseUrl ?? envStr(env, 'CHORUS_ADVERTISE_URL') ?? (port ? `http://127.0.0.1:${port}` : null),
    roles: input.roles ?? (envRoles ? envRoles.split(',').map((r) => r.trim()).filter(Boolean) : []),
    metadata: input.metadata ?? {},
    secret: input.secret ?? envStr(env, 'CHORUS_SECRET') ?? (presetName === 'local' ? randomBytes(24).toString('base64url') : ''),
    preset: presetName,
    schema: input.schema ?? envStr(env, 'CHORUS_SCHEMA') ?? 'chorus',
    migrate: input.migrate ?? true,
    heartbeatMs: input.heartbeatMs ?? envInt(env, 'CHORUS_HEARTBEAT_MS') ?? preset.heartbeatMs,
    failAfterMs: input.failAfterMs ?? envInt(env, 'CHORUS_FAIL_AFTER_MS') ?? preset.failAfterMs,
    fenceMarginMs: input.fenceMarginMs ?? preset.fenceMarginMs,
    burstRatio: input.burstRatio ?? 0.5,
    poolSize: input.poolSize ?? 10,
    closeTimeoutMs: input.closeTimeoutMs ?? envInt(env, 'CHORUS_CLOSE_TIMEOUT_MS') ?? 25_000,
    embedded: {
      dataDir: resolve(input.embedded?.dataDir ?? envStr(env, 'CHORUS_DATA_DIR') ?? '.chorus/postgres'),
      port: input.embedded?.port ?? envInt(env, 'CHORUS_PG_PORT') ?? 0,
    },
    bus: {
      url: input.bus?.url ?? envStr(env, 'CHORUS_BUS_URL') ?? null,
      maxPayloadBytes: input.bus?.maxPayloadBytes ?? busDefaults.maxPayloadBytes,
      maxQueueBytes: input.bus?.maxQueueBytes ?? busDefaults.maxQueueBytes,
      payloadRetentionMs: input.bus?.payloadRetentionMs ?? busDefaults.payloadRetentionMs,
    },
    files: {
      root: resolve(input.files?.root ?? envStr(env, 'CHORUS_FILES_ROOT') ?? '.chorus/files'),
      maxFileBytes: input.files?.maxFileBytes ?? envInt(env, 'CHORUS_FILES_MAX_FILE_BYTES') ?? 100 * 1024 * 1024,
      tempMaxAgeMs: input.files?.tempMaxAgeMs ?? 6 * 60 * 60 * 1000,
    },
    rpc: {
      path: input.rpc?.path ?? '/_chorus/rpc',
      maxBodyBytes: input.rpc?.maxBodyBytes ?? 1024 * 1024,
      timeoutMs: input.rpc?.timeoutMs ?? envInt(env, 'CHORUS_RPC_TIMEOUT_MS') ?? 5000,
      windowMs: input.rpc?.windowMs ?? 30_000,
      maxNonces: input.rpc?.maxNonces ?? 100_000,
      ca: input.rpc?.ca ?? envFile(env, 'CHORUS_RPC_CA_FILE') ?? null,
    },
    config: input.config ?? {},
    transport: input.transport ?? null,
    logger: input.logger ?? null,
    logLevel: input.logLevel ?? envStr(env, 'CHORUS_LOG_LEVEL') ?? 'info',
  }
  const parsed = resolvedSchema.safeParse(candidate)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!
    if (issue.path.join('.') === 'secret' && candidate.secret === '') {
      throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', ['secret', 'is required unless preset is "local" (set CHORUS_SECRET)'], { details: { option: 'secret' } })
    }
    throw optionError(issue, candidate)
  }
  // A copy, in the JSON form peers will see: freezing must not reach into the caller's objects.
  parsed.data.metadata = JSON.parse(JSON.stringify(parsed.data.metadata)) as Record<string, unknown>
  return deepFreeze(parsed.data as ResolvedOptions)
}

/** Freezes plain objects and arrays, never what the caller handed in as a live object (a logger, a transport, a zod schema). */
function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    const proto = Object.getPrototypeOf(value) as unknown
    if (!Array.isArray(value) && proto !== Object.prototype && proto !== null) return value
    Object.freeze(value)
    for (const v of Object.values(value)) deepFreeze(v)
  }
  return value
}
