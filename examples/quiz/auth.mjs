// Login, sessions and the realtime token. Sessions live in the Chorus session store, so a user
// stays logged in whichever instance the balancer picks; `QUIZ_SESSIONS=local` keeps them in each
// instance's memory instead, which needs sticky sessions at the balancer (`chorus up --sticky`).
import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import fastifyCookie from '@fastify/cookie'
import fastifySession from '@fastify/session'
import { checkPassword } from './db.mjs'

const TOKEN_TTL_S = 12 * 3600

export class HttpError extends Error {
  constructor(status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
}

export async function registerAuth(app, { cluster, sql, secret }) {
  const key = createHash('sha256').update(`quiz-session:${secret}`).digest('hex')
  await app.register(fastifyCookie)
  await app.register(fastifySession, {
    secret: key,
    cookieName: 'quiz.sid',
    cookie: { httpOnly: true, sameSite: 'lax', secure: false, maxAge: 8 * 3600 * 1000 },
    saveUninitialized: false,
    ...(process.env.QUIZ_SESSIONS === 'local' ? {} : { store: cluster.sessions.store({ name: 'quiz' }) }),
  })

  app.post('/api/login', async (req) => {
    const { name, password } = req.body ?? {}
    if (typeof name !== 'string' || typeof password !== 'string' || name.length > 64 || password.length > 200) {
      throw new HttpError(400, 'bad-login', 'name and password are required')
    }
    const user = await findUser(sql, name, password)
    if (!user) throw new HttpError(401, 'wrong-credentials', 'wrong name or password')
    await req.session.regenerate()
    req.session.user = { name: user.name, role: user.role }
    await req.session.save()
    return me(req, secret)
  })

  app.post('/api/logout', async (req) => {
    await req.session.destroy()
    return { ok: true }
  })

  app.get('/api/me', async (req) => {
    requireUser(req)
    return me(req, secret)
  })
}

async function findUser(sql, name, password) {
  const [row] = await sql`select name, role, password_hash from quiz.users where name = ${name}`
  if (row?.password_hash) return checkPassword(row.password_hash, password) ? row : null
  // Demo mode: `student1` … `student99999` log in with password "demo" (used by `npm run load`).
  if (process.env.QUIZ_DEMO_STUDENTS !== '0' && /^student\d{1,5}$/.test(name) && password === 'demo') {
    await sql`insert into quiz.users (name, role) values (${name}, 'student') on conflict do nothing`
    return { name, role: 'student' }
  }
  return null
}

function me(req, secret) {
  const user = req.session.user
  return { user: user.name, role: user.role, instance: process.env.CHORUS_INSTANCE_ID, stompToken: signToken(secret, user) }
}

export function requireUser(req, role) {
  const user = req.session?.user
  if (!user) throw new HttpError(401, 'login-required', 'please log in')
  if (role && user.role !== role) throw new HttpError(403, 'forbidden', `only an ${role} may do this`)
  return user
}

/** A token the browser sends as the STOMP `passcode`, so the WebSocket needs no cookie parsing. */
export function signToken(secret, user) {
  const exp = Math.floor(Date.now() / 1000) + TOKEN_TTL_S
  const body = `${user.name}:${user.role}:${exp}`
  return `${body}:${createHmac('sha256', secret).update(body).digest('base64url')}`
}

export function verifyToken(secret, token) {
  const parts = String(token ?? '').split(':')
  if (parts.length !== 4) return null
  const [name, role, exp, sig] = parts
  const expected = createHmac('sha256', secret).update(`${name}:${role}:${exp}`).digest('base64url')
  if (sig.length !== expected.length || !timingSafeEqual(Buffer.from(sig), Buffer.from(expected))) return null
  if (Number(exp) < Date.now() / 1000) return null
  return { name, role }
}
