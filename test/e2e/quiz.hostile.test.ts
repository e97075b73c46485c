// The quiz reference app under requests a stranger or a foreign page would send: a state-changing
// request from another origin or without the session's CSRF token does nothing (403); the numbered
// demo students exist only when the load test's switch is on; a form-encoded body or a `..` path is
// a 4xx without an ERROR line; a realtime token stops working once its session logs out.
import { request } from 'node:http'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { asUser, login, startQuiz, type QuizCluster } from '../helpers/quiz.js'
import { rawSocket, until } from '../helpers/stomp.js'

/** A request exactly as given: Node's fetch would resolve `..` in the path itself. */
function raw(base: string, method: string, path: string, headers: Record<string, string> = {}, body = ''): Promise<{ status: number; body: string }> {
  const url = new URL(base)
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, method, path, headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) } }, (res) => {
      let text = ''
      res.on('data', (c: Buffer) => (text += c.toString()))
      res.on('end', () => resolve({ status: res.statusCode!, body: text }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

/** CONNECTs over a raw WebSocket with `passcode`; the first frame the gateway answers with. */
async function stompConnect(url: string, passcode: string): Promise<string> {
  const socket = await rawSocket(url)
  try {
    socket.send(`CONNECT\naccept-version:1.2\nhost:quiz\npasscode:${passcode}\n\n\0`)
    await until(() => socket.received.length > 0, 10_000, 'an answer to CONNECT')
    return socket.received[0]!.split('\n')[0]!
  } finally {
    socket.ws.terminate()
  }
}

describe('the quiz app under hostile requests', () => {
  let quiz: QuizCluster
  let sql: postgres.Sql
  beforeAll(async () => {
    quiz = await startQuiz()
    sql = postgres(await quiz.databaseUrl(), { max: 2, onnotice: () => undefined })
  })
  afterAll(async () => {
    await sql?.end()
    await quiz?.stop()
  })

  const quizState = async (id: number) => (await sql`select state, title from quiz.quizzes where id = ${id}`)[0]!

  it('refuses a state-changing request from another origin (403), even with the session and its token', async () => {
    const teacher = await login(quiz.base, 'teacher', 'teacher')
    // A page on another port of the same host: the SameSite=Lax cookie is sent with its form post.
    const foreign = `http://127.0.0.1:${quiz.port + 50}`
    for (const from of [{ origin: foreign }, { referer: `${foreign}/attack.html` }, { origin: 'null' }] as Record<string, string>[]) {
      const res = await fetch(`${quiz.base}/api/quizzes/2/start`, { method: 'POST', headers: { ...asUser(teacher, false), ...from } })
      expect(res.status, JSON.stringify(from)).toBe(403)
      expect(((await res.json()) as { error: string }).error).toBe('cross-origin')
    }
    const login2 = await fetch(`${quiz.base}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json', origin: foreign }, body: JSON.stringify({ name: 'teacher', password: 'teacher' }) })
    expect(login2.status).toBe(403)
    expect((await quizState(2)).state).toBe('ready')
  })

  it('refuses a state-changing request without the session\'s CSRF token (403) and accepts it with the token, from its own origin', async () => {
    const teacher = await login(quiz.base, 'teacher', 'teacher')
    const other = await login(quiz.base, 'teacher', 'teacher') // another session: another token
    const edit = (headers: Record<string, string>, title: string) =>
      fetch(`${quiz.base}/api/quizzes/1`, { method: 'PUT', headers, body: JSON.stringify({ title, durationS: 60 }) })
    for (const [what, headers] of [
      ['no token', { cookie: teacher.cookie, 'content-type': 'application/json' }],
      ['another session\'s token', { ...asUser(teacher), 'x-csrf-token': other.csrfToken }],
      ['a token of the wrong length', { ...asUser(teacher), 'x-csrf-token': 'x' }],
    ] as const) {
      const res = await edit(headers, `forged: ${what}`)
      expect(res.status, what).toBe(403)
      expect(((await res.json()) as { error: string }).error, what).toBe('csrf-token')
    }
    const noToken = await fetch(`${quiz.base}/api/quizzes/2/start`, { method: 'POST', headers: { cookie: teacher.cookie } })
    expect(noToken.status).toBe(403)
    expect(await quizState(1)).toEqual({ state: 'ready', title: 'Cluster basics' })
    expect((await quizState(2)).state).toBe('ready')

    // From its own origin (as the page sends it), or from no browser at all, with the token.
    expect((await edit({ ...asUser(teacher), origin: quiz.base }, 'Cluster basics, edited')).status).toBe(200)
    expect((await quizState(1)).title).toBe('Cluster basics, edited')
    expect((await edit(asUser(teacher), 'Cluster basics')).status).toBe(200)
    expect((await quizState(1)).title).toBe('Cluster basics')
    // /api/me hands the same token to the page of the same session.
    const me = (await (await fetch(`${quiz.base}/api/me`, { headers: { cookie: teacher.cookie } })).json()) as { csrfToken: string }
    expect(me.csrfToken).toBe(teacher.csrfToken)
  })

  it('refuses the numbered demo students unless the switch is on', async () => {
    const res = await fetch(`${quiz.base}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'student1', password: 'demo' }) })
    expect(res.status).toBe(401)
    expect(await sql`select 1 from quiz.users where name = 'student1'`).toHaveLength(0)
  })

  it('answers a form-encoded body and a `..` path with a 4xx, and logs no request failure', async () => {
    const teacher = await login(quiz.base, 'teacher', 'teacher')
    const form = { 'content-type': 'application/x-www-form-urlencoded' }
    const statuses = [
      (await raw(quiz.base, 'POST', '/api/login', form, 'name=teacher&password=teacher')).status,
      (await raw(quiz.base, 'PUT', '/api/quizzes/1', { ...asUser(teacher), ...form }, 'title=x&durationS=60')).status,
    ]
    for (const path of ['/../../../package.json', '/%2e%2e/%2e%2e/%2e%2e/package.json', '/..%2f..%2f..%2fpackage.json', '/api/exports/..%2f..%2f..%2fpackage.json', '/vendor/..%2f..%2f..%2fpackage.json']) {
      const res = await raw(quiz.base, 'GET', path, { cookie: teacher.cookie })
      expect(res.body, path).not.toContain('"name": "chorus"')
      statuses.push(res.status)
    }
    for (const s of statuses) expect(s, JSON.stringify(statuses)).toBeGreaterThanOrEqual(400)
    for (const s of statuses) expect(s, JSON.stringify(statuses)).toBeLessThan(500)
    expect(statuses.slice(0, 2)).toEqual([415, 415])
    // Still serving, and nothing logged as a failure of the app.
    expect((await fetch(`${quiz.base}/api/me`, { headers: { cookie: teacher.cookie } })).status).toBe(200)
    expect(quiz.output()).not.toMatch(/request failed/)
  })

  it('refuses the realtime token of a session that logged out, on every instance', async () => {
    const alice = await login(`http://127.0.0.1:${quiz.port + 1}`, 'alice', 'alice')
    const stomp = (i: number) => `ws://127.0.0.1:${quiz.port + i}/stomp`
    expect(await stompConnect(stomp(2), alice.stompToken)).toBe('CONNECTED')
    const logout = await fetch(`http://127.0.0.1:${quiz.port + 1}/api/logout`, { method: 'POST', headers: asUser(alice, false) })
    expect(logout.status).toBe(200)
    for (const i of [1, 2, 3]) expect(await stompConnect(stomp(i), alice.stompToken), `instance-${i}`).toBe('ERROR')
    // A new login gets a token that works.
    const again = await login(quiz.base, 'alice', 'alice')
    expect(await stompConnect(stomp(3), again.stompToken)).toBe('CONNECTED')
  })
})

describe('the quiz app run for the load test', () => {
  let quiz: QuizCluster
  beforeAll(async () => {
    quiz = await startQuiz({ instances: 1, env: { QUIZ_DEMO_STUDENTS: 'on' } })
  })
  afterAll(async () => {
    await quiz?.stop()
  })

  it('lets the numbered demo students log in with the password "demo", and nobody with another', async () => {
    const student = await login(quiz.base, 'student4711', 'demo')
    expect(student).toMatchObject({ user: 'student4711', role: 'student' })
    const wrong = await fetch(`${quiz.base}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'student4712', password: 'nope' }) })
    expect(wrong.status).toBe(401)
  })
})
