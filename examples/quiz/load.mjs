// Load test for a running quiz cluster: N simulated students log in, connect over STOMP through the
// balancer, receive the quiz start, answer every question (SEND with receipt), and receive their
// result. Prints quiz-start fan-out p50/p99, answers/s and results delivered. The students are the
// demo accounts `student1`… (password `demo`), which exist only when the cluster runs with
// QUIZ_DEMO_STUDENTS=on (`chorus up` passes its environment to the instances):
//
//   QUIZ_DEMO_STUDENTS=on npm start
//   npm run load -- --students 500 [--url http://127.0.0.1:8080] [--quiz 2] [--duration 15]
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { Client } from '@stomp/stompjs'
import { WebSocket } from 'ws'

const { values } = parseArgs({
  options: {
    students: { type: 'string', default: '100' },
    url: { type: 'string', default: 'http://127.0.0.1:8080' },
    quiz: { type: 'string', default: '2' },
    duration: { type: 'string', default: '15' },
    concurrency: { type: 'string', default: '25' },
  },
})
const N = Number(values.students)
const base = values.url.replace(/\/$/, '')
const quizId = Number(values.quiz)
const duration = Number(values.duration)
if (!Number.isInteger(N) || N < 1 || N > 5000) throw new Error('--students must be 1-5000')

const now = () => performance.timeOrigin + performance.now()
const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))] : NaN
}

async function login(name, password) {
  const res = await fetch(`${base}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name, password }) })
  if (res.status === 401 && password === 'demo') {
    process.stderr.write(`\nlogin ${name} refused: the demo students are off; start the cluster with QUIZ_DEMO_STUDENTS=on npm start\n`)
    process.exit(2)
  }
  if (!res.ok) throw new Error(`login ${name}: ${res.status} ${await res.text()}`)
  const cookie = res.headers.get('set-cookie').split(';')[0]
  return { cookie, ...(await res.json()) }
}

async function pool(items, limit, fn) {
  const out = new Array(items.length)
  let next = 0
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++
      out[i] = await fn(items[i], i)
    }
  }))
  return out
}

const wsUrl = base.replace(/^http/, 'ws') + '/stomp'

function connectStudent(me) {
  return new Promise((resolve, reject) => {
    const s = { me, startedAt: null, startLatency: null, result: null, client: null, sent: 0, acked: 0 }
    const client = new Client({
      webSocketFactory: () => new WebSocket(wsUrl, ['v12.stomp']),
      connectHeaders: { passcode: me.stompToken },
      reconnectDelay: 500,
      heartbeatIncoming: 0,
      heartbeatOutgoing: 0,
      debug: () => undefined,
    })
    s.client = client
    const timer = setTimeout(() => reject(new Error(`${me.user}: no connection`)), 30_000)
    client.onConnect = () => {
      client.subscribe('/topic/course/1', (m) => {
        const event = JSON.parse(m.body)
        if (event.type === 'quiz-started' && event.quiz.id === quizId && s.startedAt === null) {
          s.startedAt = now()
          s.startLatency = Date.now() - event.publishedAt
          s.quiz = event.quiz
        }
      })
      client.subscribe('/user/queue/results', (m) => {
        const r = JSON.parse(m.body)
        if (r.quizId === quizId) s.result = r
      }, { receipt: `sub-${me.user}` })
      client.watchForReceipt(`sub-${me.user}`, () => {
        clearTimeout(timer)
        resolve(s)
      })
    }
    client.activate()
  })
}

function answerAll(s) {
  const sends = s.quiz.questions.map((q, i) => new Promise((resolve) => {
    const receipt = `a-${s.me.user}-${i}`
    s.client.watchForReceipt(receipt, () => {
      s.acked++
      resolve()
    })
    s.sent++
    s.client.publish({ destination: `/app/quiz/${quizId}/answer`, body: JSON.stringify({ questionId: q.id, choice: (i + s.me.user.length) % q.choices.length }), headers: { receipt, 'content-type': 'application/json' } })
  }))
  return Promise.all(sends)
}

const t0 = now()
const teacher = await login('teacher', 'teacher')
const headers = { cookie: teacher.cookie, 'content-type': 'application/json', 'x-csrf-token': teacher.csrfToken }
const course = await (await fetch(`${base}/api/courses/1`, { headers })).json()
const quiz = course.quizzes.find((q) => q.id === quizId)
if (!quiz) throw new Error(`quiz ${quizId} not found`)
if (quiz.state === 'running') throw new Error(`quiz ${quizId} is running; wait for it to end`)
const put = await fetch(`${base}/api/quizzes/${quizId}`, { method: 'PUT', headers, body: JSON.stringify({ title: quiz.title, durationS: duration }) })
if (!put.ok) throw new Error(`setting the duration failed: ${await put.text()}`)

process.stdout.write(`logging in ${N} students… `)
const logins = await pool(Array.from({ length: N }, (_, i) => `student${i + 1}`), Number(values.concurrency), (name) => login(name, 'demo'))
process.stdout.write(`connecting… `)
const students = await pool(logins, Number(values.concurrency), connectStudent)
process.stdout.write(`ready after ${((now() - t0) / 1000).toFixed(1)} s\n`)

const startAt = now()
const started = await fetch(`${base}/api/quizzes/${quizId}/start`, { method: 'POST', headers: { cookie: teacher.cookie, 'x-csrf-token': teacher.csrfToken } })
if (!started.ok) throw new Error(`start failed: ${await started.text()}`)
const startDeadline = now() + 20_000
while (students.some((s) => s.startedAt === null) && now() < startDeadline) await new Promise((r) => setTimeout(r, 20))
const gotStart = students.filter((s) => s.startedAt !== null)

const answersFrom = now()
await Promise.all(gotStart.map(answerAll))
const answersTook = (now() - answersFrom) / 1000
const answers = gotStart.reduce((n, s) => n + s.acked, 0)

const resultDeadline = now() + (duration + 40) * 1000
while (students.some((s) => s.result === null) && now() < resultDeadline) await new Promise((r) => setTimeout(r, 100))
const delivered = students.filter((s) => s.result !== null).length
const stats = await (await fetch(`${base}/api/quizzes/${quizId}/statistics`, { headers })).json()

for (const s of students) await s.client.deactivate()
const lat = gotStart.map((s) => s.startLatency)
console.log('')
console.log(`students                         ${N}`)
console.log(`quiz start delivered             ${gotStart.length} / ${N}`)
console.log(`quiz start fan-out p50 / p99     ${quantile(lat, 0.5)} ms / ${quantile(lat, 0.99)} ms (publish → student, all ${N} through the balancer)`)
console.log(`answers                          ${answers} acknowledged in ${answersTook.toFixed(2)} s = ${Math.round(answers / answersTook)} answers/s`)
console.log(`results delivered                ${delivered} / ${N}`)
console.log(`evaluated students (database)    ${stats.students}`)
const recorded = stats.perQuestion.reduce((n, row) => n + row.n, 0)
console.log(`answers recorded / counted       ${recorded} rows / ${stats.answersCounted} on the hot counter (acknowledged ${answers})`)
console.log(`total time                       ${((now() - t0) / 1000).toFixed(1)} s`)
process.exit(delivered === N && gotStart.length === N && recorded === answers && stats.answersCounted === answers ? 0 : 1)
