// The live-quiz reference app: a Fastify server that uses only Chorus's public API. Run three of it
// behind the balancer with `npm start` (chorus up), then open http://localhost:8080.
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import Fastify from 'fastify'
import fastifyStatic from '@fastify/static'
import { createCluster } from 'chorus'
import { HttpError, registerAuth } from './auth.mjs'
import { openDb, prepare } from './db.mjs'
import { registerExercises } from './exercises.mjs'
import { registerQuiz } from './quiz.mjs'
import { registerSettings, settingsSchema } from './settings.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const require = createRequire(import.meta.url)
const port = Number(process.env.PORT ?? 8081)
// Everything comes from the environment `chorus up` sets: DATABASE_URL, CHORUS_INSTANCE_ID,
// CHORUS_SECRET, PORT; shared files under CHORUS_FILES_ROOT (default ./.chorus/files). Shared
// settings (default quiz duration, uploads on or off) come from cluster.config: see settings.mjs.
// A start that fails (database unreachable, a pooler without CHORUS_DIRECT_URL, a bad option) says
// why in one line, with its CHORUS_ERR_ code.
const cluster = await createCluster({ config: { app: 'quiz', schema: settingsSchema } }).catch((err) => {
  process.stderr.write(`${err.code ?? 'error'}: ${err.message}\n`)
  process.exit(1)
})
const secret = cluster.options.secret
const sql = openDb(cluster.databaseUrl)
await prepare(cluster, sql)

const app = Fastify({ logger: false, bodyLimit: 64 * 1024 })

app.setErrorHandler((err, req, reply) => {
  if (err instanceof HttpError) return reply.status(err.status).send({ error: err.code, message: err.message })
  if (err.code === 'FST_REQ_FILE_TOO_LARGE' || err.statusCode === 413) return reply.status(413).send({ error: 'too-large', message: err.message })
  if (err.validation || err.statusCode === 400) return reply.status(400).send({ error: 'bad-request', message: err.message })
  if (typeof err.code === 'string' && err.code.startsWith('CHORUS_ERR_')) return reply.status(err.status ?? 500).send({ error: err.code, message: err.message })
  // Anything else Fastify or a plugin refused (415 for a form-encoded body, 403/404 for a path the
  // static files will not serve) is the client's mistake, not a failure of the app.
  if (Number.isInteger(err.statusCode) && err.statusCode >= 400 && err.statusCode < 500) return reply.status(err.statusCode).send({ error: 'bad-request', message: err.message })
  cluster.log.error({ err, url: req.url }, 'request failed')
  return reply.status(500).send({ error: 'internal', message: 'something went wrong' })
})

const { verifyStompToken } = await registerAuth(app, { cluster, sql, secret })
registerQuiz(app, { cluster, sql })
await registerExercises(app, { cluster, sql })
registerSettings(app, { cluster })

// /health/live and /health/ready: the balancer (and a Kubernetes probe) send traffic only when ready.
cluster.health.fastify(app)
app.get('/api/instance', async () => ({ instance: cluster.instanceId, members: cluster.members.list().map((m) => ({ id: m.instanceId, status: m.status })) }))
if (cluster.metrics) app.get('/metrics', async (_req, reply) => reply.type('text/plain; version=0.0.4').send(await cluster.metrics.text()))

await app.register(fastifyStatic, { root: join(here, 'public'), prefix: '/', index: ['index.html'] })
// The package's CommonJS entry is its UMD bundle; the minified one sits beside it.
const stompBundle = require.resolve('@stomp/stompjs')
app.get('/vendor/stomp.js', (_req, reply) => reply.sendFile('stomp.umd.min.js', dirname(stompBundle), { maxAge: 3600_000 }))

const courseOf = (destination) => /^\/topic\/course\/(\d+)(\/stats)?$/.exec(destination)
cluster.realtime.attach(app.server, {
  path: '/stomp',
  authenticate: async (_request, headers) => {
    if (!headers) return null // at the upgrade: the STOMP CONNECT carries the token
    const user = await verifyStompToken(headers.passcode)
    if (!user) throw new Error('log in first (passcode: the stompToken from /api/me)')
    return user
  },
  authorize: (principal, action, destination) => {
    if (!principal) return false
    if (action === 'subscribe') {
      if (destination === '/user/queue/results') return true
      const m = courseOf(destination)
      return !!m && (!m[2] || principal.role === 'instructor')
    }
    return action === 'send' && principal.role === 'student' && /^\/app\/quiz\/\d+\/answer$/.test(destination)
  },
  heartbeat: { send: 10_000, receive: 10_000 },
})

await app.listen({ port, host: '127.0.0.1' })
cluster.log.info({ port, sessions: process.env.QUIZ_SESSIONS === 'local' ? 'local (needs sticky)' : 'shared' }, `quiz listening on http://127.0.0.1:${port}`)

let closing = false
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, async () => {
    if (closing) return
    closing = true
    await cluster.close()
    await app.close()
    await sql.end({ timeout: 2 })
    process.exit(0)
  })
}
