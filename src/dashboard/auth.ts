/**
 * Who may use the dashboard. One password (CHORUS_DASHBOARD_PASSWORD) is stretched once into a key;
 * the key signs session cookies (HttpOnly, SameSite=Strict), derives each session's CSRF token, and
 * signs the API tokens scripts use. A cookie or token is valid only while its record is in the
 * credential store: signing out and revoking a token delete it (for every dashboard on the database,
 * across restarts), tokens expire, and changing the password ends every session and token at once.
 * Nothing here stores a secret in the clear besides the key in memory.
 */
import { createHash, createHmac, randomBytes, scryptSync, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { ChorusError } from '../errors.js'
import { MemoryCredentials, type CredentialStore, type SessionRecord, type TokenRecord } from './credentials.js'

export type { TokenRecord } from './credentials.js'

export const SESSION_COOKIE = 'chorus_dashboard'
export const MIN_PASSWORD_LENGTH = 8
/** The name of the token a dashboard prints at start (reused while more than half its lifetime is left). */
export const STARTUP_TOKEN_NAME = 'dashboard'
export const DEFAULT_SESSION_TTL_MS = 12 * 60 * 60_000
export const DEFAULT_TOKEN_TTL_MS = 30 * 24 * 60 * 60_000
export const MAX_TOKEN_TTL_MS = 365 * 24 * 60 * 60_000

export type Session = SessionRecord

export type Credential =
  | { readonly via: 'session'; readonly session: Session }
  | { readonly via: 'bearer'; readonly token: TokenRecord }
  | { readonly via: 'basic'; readonly user: string }

/** No credential: `bad` when a password or token was offered but is wrong (a guess to throttle); `why` says what ended a real one. */
export type Refusal = { readonly bad: boolean; readonly why?: string }

export interface AccessOptions {
  /** Where sessions and tokens are recorded. Default: in memory (sign-outs do not outlive the process). */
  store?: CredentialStore
  /** Lifetime of a sign-in. Default 12 hours. */
  sessionTtlMs?: number
  /** Default lifetime of an API token. Default 30 days; at most 365 days. */
  tokenTtlMs?: number
  /** Sessions kept at most; signing in beyond ends the oldest. Default 1,000. */
  maxSessions?: number
  /** API tokens live at most; creating one more is refused (`CHORUS_ERR_DASHBOARD_TOKEN_LIMIT`). Default 100. */
  maxTokens?: number
}

const TOKEN = /^chd_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/

export function checkPasswordStrength(password: unknown): asserts password is string {
  if (typeof password !== 'string' || password.length === 0) throw new ChorusError('CHORUS_ERR_DASHBOARD_PASSWORD_MISSING')
  if (password.length < MIN_PASSWORD_LENGTH) throw new ChorusError('CHORUS_ERR_DASHBOARD_PASSWORD_WEAK', [MIN_PASSWORD_LENGTH])
}

export class Access {
  readonly #key: Buffer
  readonly #passwordDigest: Buffer
  readonly #store: CredentialStore
  readonly #sessionTtlMs: number
  readonly #maxSessions: number
  readonly #maxTokens: number
  /** Default lifetime of a new API token. */
  readonly tokenTtlMs: number

  constructor(password: string, opts: AccessOptions = {}) {
    checkPasswordStrength(password)
    this.#key = scryptSync(password, 'chorus-dashboard-v1', 32)
    this.#passwordDigest = digest(password)
    this.#store = opts.store ?? new MemoryCredentials()
    this.#sessionTtlMs = opts.sessionTtlMs ?? DEFAULT_SESSION_TTL_MS
    this.tokenTtlMs = opts.tokenTtlMs ?? DEFAULT_TOKEN_TTL_MS
    if (!Number.isSafeInteger(this.tokenTtlMs) || this.tokenTtlMs < 1000 || this.tokenTtlMs > MAX_TOKEN_TTL_MS) {
      throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', ['tokenTtlMs', 'must be from 1 second to 365 days, in milliseconds'], { details: { option: 'tokenTtlMs' } })
    }
    this.#maxSessions = opts.maxSessions ?? 1000
    this.#maxTokens = opts.maxTokens ?? 100
  }

  checkPassword(candidate: string): boolean {
    return timingSafeEqual(digest(candidate), this.#passwordDigest)
  }

  // ---- sessions --------------------------------------------------------------------------------

  /** A new session, recorded, and the Set-Cookie header value that carries it; the oldest ends when too many are live. */
  async issueSession(secure: boolean): Promise<{ session: Session; cookie: string }> {
    const now = Date.now()
    const exp = Math.floor((now + this.#sessionTtlMs) / 1000)
    const id = randomBytes(16).toString('base64url')
    const session: Session = { id, createdAt: now, expiresAt: exp * 1000 }
    const live = await this.#store.sessions.list()
    if (live.length >= this.#maxSessions) {
      for (const old of live.sort((a, b) => a.createdAt - b.createdAt).slice(0, live.length - this.#maxSessions + 1)) await this.#store.sessions.delete(old.id)
    }
    await this.#store.sessions.put(session)
    const value = `${exp}.${id}.${this.#mac(`session:${exp}.${id}`)}`
    const cookie = `${SESSION_COOKIE}=${value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${Math.max(0, exp - Math.floor(now / 1000))}${secure ? '; Secure' : ''}`
    return { session, cookie }
  }

  /** Ends the session the request's cookie carries (if any): the cookie no longer admits anyone, anywhere. */
  async endSession(req: IncomingMessage): Promise<string | null> {
    const raw = readCookie(req.headers.cookie, SESSION_COOKIE)
    const session = raw === undefined ? null : this.#readSession(raw)
    if (!session) return null
    await this.#store.sessions.delete(session.id)
    return session.id
  }

  /** The Set-Cookie value that removes the session cookie. */
  clearCookie(): string {
    return `${SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0`
  }

  /** The CSRF token of a session: actions from the page send it in `X-CSRF-Token`. */
  csrfToken(session: Session): string {
    return this.#mac(`csrf:${session.id}`)
  }

  checkCsrf(session: Session, candidate: string | undefined): boolean {
    return typeof candidate === 'string' && safeEqual(candidate, this.csrfToken(session))
  }

  // ---- API tokens ------------------------------------------------------------------------------

  /** A new API token (shown once: only its record is kept). Refused beyond `maxTokens` live ones. */
  async issueToken(opts: { name?: string; ttlMs?: number } = {}, internal = false): Promise<{ record: TokenRecord; token: string }> {
    const name = opts.name ?? 'api'
    if (typeof name !== 'string' || name.length === 0 || name.length > 100 || /[\u0000-\u001f\u007f]/.test(name)) {
      throw new ChorusError('CHORUS_ERR_DASHBOARD_BAD_REQUEST', ['a token name is 1-100 characters without control characters'])
    }
    const ttlMs = opts.ttlMs ?? this.tokenTtlMs
    if (!Number.isSafeInteger(ttlMs) || ttlMs < 1000 || ttlMs > MAX_TOKEN_TTL_MS) {
      throw new ChorusError('CHORUS_ERR_DASHBOARD_BAD_REQUEST', ['a token lifetime (ttlSeconds) is a whole number of seconds from 1 to 31536000 (365 days)'])
    }
    if (!internal && (await this.#store.tokens.list()).length >= this.#maxTokens) throw new ChorusError('CHORUS_ERR_DASHBOARD_TOKEN_LIMIT', [this.#maxTokens])
    const now = Date.now()
    const record: TokenRecord = { id: randomBytes(8).toString('hex'), name, createdAt: now, expiresAt: now + ttlMs }
    await this.#store.tokens.put(record)
    return { record, token: this.#tokenOf(record.id) }
  }

  /**
   * The token a dashboard prints at start and the page shows: the newest live `dashboard` token
   * while more than half its lifetime is left, else a new one — so restarts do not pile tokens up.
   */
  async startupToken(): Promise<{ record: TokenRecord; token: string }> {
    const now = Date.now()
    const reusable = (await this.#store.tokens.list())
      .filter((t) => t.name === STARTUP_TOKEN_NAME && t.expiresAt - now > (t.expiresAt - t.createdAt) / 2)
      .sort((a, b) => b.createdAt - a.createdAt)[0]
    if (reusable) return { record: reusable, token: this.#tokenOf(reusable.id) }
    return this.issueToken({ name: STARTUP_TOKEN_NAME }, true)
  }

  /** Live tokens, newest first (records only: a token is shown once, when created). */
  async tokens(): Promise<TokenRecord[]> {
    return (await this.#store.tokens.list()).sort((a, b) => b.createdAt - a.createdAt)
  }

  /** Revokes a token at once; false when there is no such live token. */
  async revokeToken(id: string): Promise<boolean> {
    return /^[0-9a-f]{16}$/.test(id) ? this.#store.tokens.delete(id) : false
  }

  #tokenOf(id: string): string {
    return `chd_${id}_${this.#mac(`token:${id}`)}`
  }

  // ---- requests --------------------------------------------------------------------------------

  /**
   * The credential a request carries, or a refusal. `accept` says which are taken: a session
   * cookie (pages, API, actions), a bearer token (API, actions, metrics), HTTP Basic with the
   * password (Eureka clients, metrics scrapers). A wrong password or token is `bad` (a failed
   * attempt to throttle); a genuine cookie or token that was signed out, revoked or expired is not
   * (its MAC cannot be guessed), and `why` says so.
   */
  async authenticate(req: IncomingMessage, accept: { session?: boolean; bearer?: boolean; basic?: boolean }): Promise<Credential | Refusal> {
    const auth = req.headers.authorization
    if (auth) {
      const [scheme, value = ''] = auth.split(/\s+/, 2)
      const s = scheme?.toLowerCase()
      if (s === 'bearer' && accept.bearer) {
        const m = TOKEN.exec(value)
        if (!m || !safeEqual(m[2]!, this.#mac(`token:${m[1]}`))) return { bad: true }
        const token = await this.#store.tokens.get(m[1]!)
        return token ? { via: 'bearer', token } : { bad: false, why: 'the token has expired or was revoked' }
      }
      if (s === 'basic' && accept.basic) {
        const decoded = Buffer.from(value, 'base64').toString('utf8')
        const colon = decoded.indexOf(':')
        if (colon < 0) return { bad: true }
        return this.checkPassword(decoded.slice(colon + 1)) ? { via: 'basic', user: decoded.slice(0, colon) } : { bad: true }
      }
      // A scheme this route does not take (a browser replaying cached Basic credentials on a page,
      // say) is ignored rather than failed: the cookie may still admit the request.
    }
    if (accept.session) {
      const raw = readCookie(req.headers.cookie, SESSION_COOKIE)
      if (raw === undefined) return { bad: false }
      const signed = this.#readSession(raw)
      // An invalid cookie is an expired or old session, not a guess (its MAC cannot be guessed):
      // it is refused but not counted as a failed attempt.
      if (!signed) return { bad: false, why: 'the session has expired' }
      const session = await this.#store.sessions.get(signed.id)
      return session ? { via: 'session', session } : { bad: false, why: 'the session has ended (signed out)' }
    }
    return { bad: false }
  }

  /** Whether a session or token (by `owner`, as `ownerOf` names it) is still live: open streams are closed once not. */
  async stillValid(owner: string): Promise<boolean> {
    if (owner.startsWith('s:')) return (await this.#store.sessions.get(owner.slice(2))) !== undefined
    if (owner.startsWith('t:')) return (await this.#store.tokens.get(owner.slice(2))) !== undefined
    return true
  }

  /** The session's expiry in the cookie's own terms (seconds), checked against its MAC. */
  #readSession(value: string): { id: string; expiresAt: number } | null {
    const [exp, id, mac, extra] = value.split('.')
    if (!exp || !id || !mac || extra !== undefined || !/^\d{1,12}$/.test(exp)) return null
    if (!safeEqual(mac, this.#mac(`session:${exp}.${id}`))) return null
    const expiresAt = Number(exp) * 1000
    if (expiresAt <= Date.now()) return null
    return { id, expiresAt }
  }

  #mac(what: string): string {
    return createHmac('sha256', this.#key).update(what).digest('base64url')
  }
}

/** Names what a credential rides on, for closing its open streams when it ends; null for Basic (no record). */
export function ownerOf(cred: Credential): string | null {
  if (cred.via === 'session') return `s:${cred.session.id}`
  if (cred.via === 'bearer') return `t:${cred.token.id}`
  return null
}

/** A random password for `chorus up` when none is set: 20 characters, easy to copy. */
export function generatePassword(): string {
  return randomBytes(15).toString('base64url')
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest()
}

function safeEqual(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b))
}

export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq < 0) continue
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim()
  }
  return undefined
}

/**
 * Whether a state-changing request comes from the dashboard's own pages: its Origin (or, when a
 * browser sent none, its Referer) must name the host the request was sent to. Requests with
 * neither (scripts with a bearer token) pass only when `allowMissing`.
 */
export function sameOrigin(req: IncomingMessage, allowMissing: boolean): { ok: true } | { ok: false; why: string } {
  const host = req.headers.host
  const origin = req.headers.origin
  const referer = req.headers.referer
  const source = origin ?? referer
  if (source === undefined) return allowMissing ? { ok: true } : { ok: false, why: 'no Origin or Referer header' }
  if (source === 'null') return { ok: false, why: 'opaque origin' }
  let url: URL
  try {
    url = new URL(source)
  } catch {
    return { ok: false, why: `unparsable ${origin !== undefined ? 'Origin' : 'Referer'}` }
  }
  if (!host || url.host !== host) return { ok: false, why: `origin ${url.origin} is not this dashboard` }
  return { ok: true }
}
