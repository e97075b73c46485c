/**
 * Who may use the dashboard. One password (CHORUS_DASHBOARD_PASSWORD) is stretched once into a key;
 * the key signs stateless session cookies (HttpOnly, SameSite=Strict), derives each session's CSRF
 * token, and derives the bearer token scripts use. Changing the password therefore ends every
 * session and token at once. Nothing here stores a secret in the clear besides the key in memory.
 */
import { createHash, createHmac, randomBytes, scryptSync, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { ChorusError } from '../errors.js'

export const SESSION_COOKIE = 'chorus_dashboard'
export const MIN_PASSWORD_LENGTH = 8

export interface Session {
  readonly id: string
  readonly expiresAt: number
}

export type Credential = { readonly via: 'session'; readonly session: Session } | { readonly via: 'bearer' } | { readonly via: 'basic'; readonly user: string }

export class Access {
  readonly #key: Buffer
  readonly #passwordDigest: Buffer
  readonly #ttlMs: number
  /** The bearer token for scripts: `Authorization: Bearer <token>`. Derived from the password. */
  readonly token: string

  constructor(password: string, opts: { sessionTtlMs?: number } = {}) {
    if (typeof password !== 'string' || password.length === 0) throw new ChorusError('CHORUS_ERR_DASHBOARD_PASSWORD_MISSING')
    if (password.length < MIN_PASSWORD_LENGTH) throw new ChorusError('CHORUS_ERR_DASHBOARD_PASSWORD_WEAK', [MIN_PASSWORD_LENGTH])
    this.#key = scryptSync(password, 'chorus-dashboard-v1', 32)
    this.#passwordDigest = digest(password)
    this.#ttlMs = opts.sessionTtlMs ?? 12 * 60 * 60_000
    this.token = `chd_${this.#mac('token').slice(0, 40)}`
  }

  checkPassword(candidate: string): boolean {
    return timingSafeEqual(digest(candidate), this.#passwordDigest)
  }

  /** A new session and the Set-Cookie header value that carries it. */
  issueSession(secure: boolean): { session: Session; cookie: string } {
    const expiresAt = Date.now() + this.#ttlMs
    const id = randomBytes(16).toString('base64url')
    const exp = Math.floor(expiresAt / 1000)
    const value = `${exp}.${id}.${this.#mac(`session:${exp}.${id}`)}`
    const cookie = `${SESSION_COOKIE}=${value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${Math.floor(this.#ttlMs / 1000)}${secure ? '; Secure' : ''}`
    return { session: { id, expiresAt: exp * 1000 }, cookie }
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

  /**
   * The credential a request carries, or null. `kind` says which are accepted: a session cookie
   * (pages, API, actions), a bearer token (API, actions, metrics), HTTP Basic with the password
   * (Eureka clients, metrics scrapers). Returns `{ bad: true }` when a password or token was offered
   * but is wrong — a failed attempt to throttle — as opposed to none at all.
   */
  authenticate(req: IncomingMessage, accept: { session?: boolean; bearer?: boolean; basic?: boolean }): Credential | { bad: boolean } {
    const auth = req.headers.authorization
    if (auth) {
      const [scheme, value = ''] = auth.split(/\s+/, 2)
      const s = scheme?.toLowerCase()
      if (s === 'bearer' && accept.bearer) return safeEqual(value, this.token) ? { via: 'bearer' } : { bad: true }
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
      const session = this.#readSession(raw)
      // An invalid cookie is an expired or old session, not a guess (its MAC cannot be guessed):
      // it is refused but not counted as a failed attempt.
      return session ? { via: 'session', session } : { bad: false }
    }
    return { bad: false }
  }

  #readSession(value: string): Session | null {
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
