/**
 * What a failed connection to PostgreSQL says to people: CHORUS_ERR_DB_CONNECT naming every host,
 * the database and the user — never the password — and a short reason read from the driver's error.
 * The URL is read the way postgres.js reads it (multi-host, its defaults), so the hosts named are the ones tried.
 */
import { userInfo } from 'node:os'
import { ChorusError, isChorusError } from '../errors.js'

export interface PostgresTarget {
  /** `host:port` of each host, in the URL's order (`[::1]:5432` for IPv6). */
  readonly hosts: readonly string[]
  readonly database: string
  readonly user: string
}

const EXPECTED = 'not a PostgreSQL URL (expected postgres://user:password@host:port/database)'

function decode(text: string): string {
  try {
    return decodeURIComponent(text)
  } catch {
    return text
  }
}

/**
 * The hosts, database and user a PostgreSQL URL names, with the driver's defaults (host `localhost`
 * or PGHOST, port 5432 or PGPORT, user PGUSER, database = user); null when it is not a
 * `postgres://` or `postgresql://` URL the driver can read.
 */
export function parseTarget(url: string, env: NodeJS.ProcessEnv = process.env): PostgresTarget | null {
  const m = /^postgres(?:ql)?:\/\/([^/?#]*)([^?#]*)/i.exec(url)
  if (!m) return null
  const authority = m[1]!
  const at = authority.lastIndexOf('@')
  const userinfo = at >= 0 ? authority.slice(0, at) : ''
  const hostList = authority.slice(at + 1)
  const first = hostList.split(',')[0]!
  // The driver parses the URL with its first host in place of the list; what WHATWG URL refuses, it refuses.
  let parsed: URL
  try {
    parsed = new URL(`postgres://${userinfo}${at >= 0 ? '@' : ''}${first}${m[2]!}`)
  } catch {
    return null
  }
  const defaultPort = env.PGPORT || '5432'
  const hosts: string[] = []
  for (const h of hostList ? hostList.split(',') : ['']) {
    const v6 = /^(\[[^\]]*\])(?::(\d*))?$/.exec(h)
    const [name, port] = v6 ? [v6[1]!, v6[2]] : [h.split(':')[0]!, h.split(':')[1]]
    if (port !== undefined && !/^\d{1,5}$/.test(port)) return null
    hosts.push(`${decode(name) || env.PGHOST || 'localhost'}:${port || defaultPort}`)
  }
  const user = decode(parsed.username) || env.PGUSERNAME || env.PGUSER || osUser()
  const database = decode(parsed.pathname.slice(1)) || env.PGDATABASE || user
  return { hosts, database, user }
}

/**
 * One URL per host of a multi-host URL, the rest unchanged, to try each host on its own: postgres.js
 * retries a multi-host URL without end while every host refuses, so its error never comes.
 */
export function singleHostUrls(url: string): string[] {
  const m = /^(postgres(?:ql)?:\/\/)([^/?#]*)([\s\S]*)$/i.exec(url)
  if (!m || !parseTarget(url)) return [url]
  const at = m[2]!.lastIndexOf('@')
  const userinfo = m[2]!.slice(0, at + 1)
  return m[2]!.slice(at + 1).split(',').map((host) => `${m[1]}${userinfo}${host}${m[3]}`)
}

function osUser(): string {
  try {
    return userInfo().username
  } catch {
    return process.env.USER ?? process.env.LOGNAME ?? '?'
  }
}

/**
 * A PostgreSQL URL for messages and logs: `host:port[,host:port…]/database (user name)`, which
 * cannot leak the password. Input that is not a PostgreSQL URL is shown with anything that may be
 * a credential masked, or as `<not a URL>` when it has no `scheme://` at all (it may be a bare secret).
 */
export function describeUrl(url: string): string {
  const target = parseTarget(url)
  if (target) return `${target.hosts.join(',')}/${target.database} (user ${target.user})`
  if (typeof url !== 'string' || !url.includes('://')) return '<not a URL>'
  const scheme = url.indexOf('://') + 3
  let rest = url.slice(scheme)
  const at = rest.lastIndexOf('@')
  if (at >= 0) {
    const colon = rest.slice(0, at).indexOf(':')
    rest = (colon >= 0 ? rest.slice(0, colon) + ':***' : rest.slice(0, at)) + rest.slice(at)
  }
  rest = rest.replace(/([?&]password=)[^&#]*/gi, '$1***')
  const shown = (url.slice(0, scheme) + rest).replace(/[\u0000-\u001f\u007f]/g, '?')
  return shown.length > 120 ? `${shown.slice(0, 117)}...` : shown
}

interface DriverError {
  code?: unknown
  message?: unknown
  hostname?: unknown
  errors?: unknown
  cause?: unknown
}

/** The error that names the problem: Node's AggregateError (one per address tried) gives its first. */
function rootOf(err: unknown): DriverError {
  let e = (err ?? {}) as DriverError
  for (let i = 0; i < 5; i++) {
    if (e.code === undefined && Array.isArray(e.errors) && e.errors.length > 0) e = e.errors[0] as DriverError
    else if (e.code === undefined && e.cause && typeof e.cause === 'object') e = e.cause as DriverError
    else break
  }
  return e
}

/** Why a connection failed, short, from the driver error; `kind` is stable for programs. */
function reasonOf(err: unknown, target: PostgresTarget, secrets: readonly string[]): { kind: string; reason: string; driverCode?: string } {
  const e = rootOf(err)
  const code = typeof e.code === 'string' ? e.code : undefined
  const message = scrub(typeof e.message === 'string' ? e.message.split('\n')[0]! : String(err), secrets)
  const known = (kind: string, reason: string) => ({ kind, reason, ...(code ? { driverCode: code } : {}) })
  switch (code) {
    case 'ECONNREFUSED':
      return known('refused', 'connection refused')
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_NONAME':
    case 'EAI_FAIL':
      return known('unknown-host', target.hosts.length > 1 && typeof e.hostname === 'string' ? `unknown host ${e.hostname}` : 'unknown host')
    case 'CONNECT_TIMEOUT':
    case 'ETIMEDOUT':
      return known('timeout', 'connection timed out')
    case 'EHOSTUNREACH':
      return known('unreachable', 'host unreachable')
    case 'ENETUNREACH':
      return known('unreachable', 'network unreachable')
    case 'ECONNRESET':
    case 'EPIPE':
    case 'CONNECTION_CLOSED':
    case 'CONNECTION_ENDED':
    case 'CONNECTION_DESTROYED':
      return known('closed', 'the server closed the connection during startup (is it PostgreSQL?)')
    case '28P01':
      return known('auth', `password authentication failed for user "${target.user}"`)
    case '3D000':
      return known('no-database', `database "${target.database}" does not exist`)
    case 'SASL_SIGNATURE_MISMATCH':
      return known('auth', 'the server did not prove it knows the password (SCRAM signature mismatch)')
    case 'ERR_INVALID_URL':
      return known('not-a-url', EXPECTED)
  }
  // Other server errors (28000 no pg_hba.conf entry, 53300 too many connections, 57P03 starting up…)
  // carry a message for people that holds no secret.
  if (code && /^[0-9A-Z]{5}$/.test(code)) return known('server', message)
  if (code && /CERT|TLS|SSL|ISSUER|LEAF_SIGNATURE/.test(code)) return known('tls', `TLS: ${message}`)
  return known('other', message)
}

/**
 * An AggregateError without a code holding one error per host (see `singleHostUrls`): one reason when
 * every host failed alike, else each host with its own.
 */
function perHost(err: unknown, target: PostgresTarget, secrets: readonly string[]): { kind: string; reason: string } | null {
  const e = err as DriverError | null
  if (!(err instanceof AggregateError) || e?.code !== undefined || target.hosts.length < 2) return null
  const errors = err.errors
  if (errors.length !== target.hosts.length) return null
  const single = (i: number): PostgresTarget => ({ ...target, hosts: [target.hosts[i]!] })
  const reasons = errors.map((x, i) => reasonOf(x, single(i), secrets))
  if (reasons.every((r) => r.reason === reasons[0]!.reason)) return reasons[0]!
  return { kind: 'several', reason: reasons.map((r, i) => `${target.hosts[i]} ${r.reason}`).join('; ') }
}

/** The password as written in the URL and decoded; too short a one is not looked for (it would match words). */
function secretsOf(url: string): string[] {
  const m = /^[a-z]+:\/\/([^/?#]*)@/i.exec(url)
  const colon = m ? m[1]!.indexOf(':') : -1
  if (!m || colon < 0) return []
  const raw = m[1]!.slice(colon + 1)
  return [...new Set([raw, decode(raw)])].filter((secret) => secret.length >= 4)
}

/** Hides the password wherever a message from the driver or the server might echo it. */
function scrub(text: string, secrets: readonly string[]): string {
  let out = text
  for (const secret of secrets) out = out.split(secret).join('***')
  return out
}

/**
 * CHORUS_ERR_DB_CONNECT for a failed connection to `url`: the message names the hosts, database and
 * user and a short reason (`connection refused`, `unknown host`, `password authentication failed for
 * user "app"`, `database "x" does not exist`, …); `details` holds the same for programs; `cause` the
 * driver's error. A URL that is not a PostgreSQL URL is said to be so, whatever the driver threw.
 */
export function connectError(url: string, err: unknown): ChorusError {
  if (isChorusError(err, 'CHORUS_ERR_DB_CONNECT')) return err
  const target = parseTarget(url)
  const secrets = secretsOf(url)
  const r = !target ? { kind: 'not-a-url', reason: EXPECTED } : perHost(err, target, secrets) ?? reasonOf(err, target, secrets)
  return new ChorusError('CHORUS_ERR_DB_CONNECT', [describeUrl(url), r.reason], {
    cause: err,
    details: { reason: r.kind, ...(target ?? {}), ...('driverCode' in r ? { driverCode: r.driverCode } : {}) },
  })
}
