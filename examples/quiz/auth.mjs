// Login, sessions, the CSRF check and the realtime token. Sessions live in the Chorus session store,
// so a user stays logged in whichever instance the balancer picks; `QUIZ_SESSIONS=local` keeps them
// in each instance's memory instead, which needs sticky sessions at the balancer (`chorus up --sticky`).
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import fastifyCookie from '@fastify/cookie'
import fastifySession from '@fastify/session'
import { checkPassword } from './db.mjs'

const TOKEN_TTL_S = 12 * 3600
const demoStudents = ['on', '1', 'true'].includes(String(process.env.QUIZ_DEMO_STUDENTS ?? '').toLowerCase())
const UNSAFE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE'])

export class HttpError extends Error {
  constructor(status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
}

/**
 * Sessions, login and logout, and a guard on every state-changing request. Returns
 * `verifyStompToken`, which accepts a realtime token until it expires or its session logs out.
 */
export async function registerAuth(app, { cluster, sql, secret }) {
  const key = createHash('sha256').update(`quiz-session:${secret}`).digest('hex')
  // Logged-out realtime tokens, cluster-wide, until the last of them would have expired anyway.
  const revoked = cluster.map('quiz.revoked-tokens')
  const revoke = (tokenId) => (tokenId ? revoked.set(tokenId, true, { ttlMs: TOKEN_TTL_S * 1000 }) : undefined)
  await app.register(fastifyCookie)
  await app.register(fastifySession, {
    secret: key,
    cookieName: 'quiz.sid',
    cookie: { httpOnly: true, sameSite: 'lax', secure: false, maxAge: 8 * 3600 * 1000 },
    saveUninitialized: false,
    ...(process.env.QUIZ_SESSIONS === 'local' ? {} : { store: cluster.sessions.store({ name: 'quiz' }) }),
  })

  // Cross-site request forgery: SameSite=Lax still sends the cookie from a page on another port of
  // this host, so every state-changing request must come from this origin (Origin, else Referer;
  // neither: not a browser) and carry the session's token (synchronizer token, from /api/me) in
  // X-CSRF-Token. The login has no session to forge yet; the Origin check covers it. Written here,
  // not taken from a plugin, because the token is one field of the session the app already keeps.
  app.addHook('onRequest', async (req) => {
    if (!UNSAFE_METHODS.has(req.method)) return
    if (!sameOrigin(req)) throw new HttpError(403, 'cross-origin', 'this request comes from another site')
    if (req.routeOptions.url === '/api/login' || !req.session.user) return // not logged in: the route answers 401 itself
    if (!sameToken(req.headers['x-csrf-token'], req.session.csrfToken)) {
      throw new HttpError(403, 'csrf-token', 'send the csrfToken from /api/me in the X-CSRF-Token header')
    }
  })

  app.post('/api/login', async (req) => {
    const { name, password } = req.body ?? {}
    if (typeof name !== 'string' || typeof password !== 'string' || name.length > 64 || password.length > 200) {
      throw new HttpError(400, 'bad-login', 'name and password are required')
    }
    const user = await findUser(sql, name, password)
    if (!user) throw new HttpError(401, 'wrong-credentials', 'wrong name or password')
    await revoke(req.session.tokenId)
    await req.session.regenerate()
    req.session.user = { name: user.name, role: user.role }
    req.session.csrfToken = randomBytes(32).toString('base64url')
    req.session.tokenId = randomBytes(16).toString('base64url')
    await req.session.save()
    return me(req, secret)
  })

  app.post('/api/logout', async (req) => {
    const user = req.session.user?.name
    // Refuse the token first (final), then end the open STOMP sessions on every instance (at most once).
    await revoke(req.session.tokenId)
    await req.session.destroy()
    if (user) await cluster.realtime.disconnectUser(user, 'signed out').catch(() => undefined)
    return { ok: true }
  })

  app.get('/api/me', async (req) => {
    requireUser(req)
    return me(req, secret)
  })

  return {
    async verifyStompToken(token) {
      const claims = verifyToken(secret, token)
      if (!claims || (await revoked.get(claims.tokenId))) return null
      return { name: claims.name, role: claims.role }
    },
  }
}

function sameOrigin(req) {
  const source = req.headers.origin ?? req.headers.referer
  if (source === undefined) return true
  try {
    return new URL(source).host === String(req.headers.host ?? '').toLowerCase()
  } catch {
    return false // `Origin: null` (a sandboxed frame, a file) or garbage
  }
}

function sameToken(given, expected) {
  if (typeof given !== 'string' || typeof expected !== 'string' || given.length !== expected.length) return false
  return timingSafeEqual(Buffer.from(given), Buffer.from(expected))
}

async function findUser(sql, name, password) {
  const [row] = await sql`select name, role, password_hash from quiz.users where name = ${name}`
  if (row?.password_hash) return checkPassword(row.password_hash, password) ? row : null
  // Demo mode, only for the load test (`QUIZ_DEMO_STUDENTS=on npm start`, then `npm run load`):
  // `student1` … `student99999` log in with password "demo".
  if (demoStudents && /^student\d{1,5}$/.test(name) && password === 'demo') {
    await sql`insert into quiz.users (name, role) values (${name}, 'student') on conflict do nothing`
    return { name, role: 'student' }
  }
  return null
}

function me(req, secret) {
  const { user } = req.session
  // A session from before CSRF tokens gets one now (saved with the session at the end of the request).
  req.session.csrfToken ??= randomBytes(32).toString('base64url')
  req.session.tokenId ??= randomBytes(16).toString('base64url')
  return { user: user.name, role: user.role, instance: process.env.CHORUS_INSTANCE_ID, csrfToken: req.session.csrfToken, stompToken: signToken(secret, user, req.session.tokenId) }
}

export function requireUser(req, role) {
  const user = req.session?.user
  if (!user) throw new HttpError(401, 'login-required', 'please log in')
  if (role && user.role !== role) throw new HttpError(403, 'forbidden', `only an ${role} may do this`)
  return user
}

/**
 * A token the browser sends as the STOMP `passcode`, so the WebSocket needs no cookie parsing. It
 * names its session's `tokenId`, which logout revokes.
 */
function signToken(secret, user, tokenId) {
  const exp = Math.floor(Date.now() / 1000) + TOKEN_TTL_S
  const body = `${user.name}:${user.role}:${exp}:${tokenId}`
  return `${body}:${createHmac('sha256', secret).update(body).digest('base64url')}`
}

function verifyToken(secret, token) {
  const parts = String(token ?? '').split(':')
  if (parts.length !== 5) return null
  const [name, role, exp, tokenId, sig] = parts
  const expected = createHmac('sha256', secret).update(`${name}:${role}:${exp}:${tokenId}`).digest('base64url')
  if (sig.length !== expected.length || !timingSafeEqual(Buffer.from(sig), Buffer.from(expected))) return null
  if (Number(exp) < Date.now() / 1000) return null
  return { name, role, tokenId }
}
