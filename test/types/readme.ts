// README "Use it in your app" and docs/state.md, as a strict NodeNext app writes them.
import { createCluster, type Cluster } from 'chorus'
import type { Readable } from 'node:stream'
import type { Server } from 'node:http'

interface Quiz { id: string; title: string }
declare const db: { quiz(id: string): Promise<Quiz> }
declare const invoice: { id: number }
declare function save(invoice: { id: number }, token: bigint): Promise<void>
declare function report(signal: AbortSignal): Promise<void>
declare const server: Server
declare const stream: Readable
declare const to: string
declare const id: string
declare const updated: Quiz

const cluster: Cluster = await createCluster({
  databaseUrl: process.env.DATABASE_URL, // omit for an embedded PostgreSQL in ./.chorus/postgres
  instanceId: 'api-1',                   // default: env CHORUS_INSTANCE_ID, else <host>-<pid>
  advertiseUrl: 'http://10.0.0.5:8081',  // where peers reach this instance
  secret: process.env.CHORUS_SECRET,     // required unless preset 'local'
})

cluster.members.list()                                  // live members
cluster.on('member:down', ({ member }) => { console.log(member) })  // also member:up, member:draining
void cluster.members.signal                             // aborted if this instance is isolated

await cluster.locks.withLock('invoice:42', async (lock) => save(invoice, lock.token))   // fenced
await cluster.jobs.enqueue('send-mail', { to }, { key: `welcome:${to}` })             // idempotent
cluster.jobs.cron('nightly', '0 3 * * *', async ({ signal }) => report(signal))         // once per tick
const quizzes = cluster.cache<Quiz>('quizzes', { load: (id) => db.quiz(id) })           // near cache
cluster.realtime.attach(server, { authenticate: () => null, authorize: () => true })    // STOMP
await cluster.realtime.publish('/topic/quiz/42', { started: true })                      // every instance
await cluster.files.area('uploads').write('a/b/report.pdf', stream)                      // atomic, locked
const { results, missing } = await cluster.rpc.broadcast('cache-size', {}, { timeoutMs: 500 })
console.log(results, missing)

// docs/state.md, near cache (with negative caching)
const quiz: Quiz = await quizzes.getOrLoad(id)
await quizzes.set(id, updated)
await quizzes.delete(id)
const users = cluster.cache<{ name: string } | null>('users', { load: async () => null })
const nobody: { name: string } | null = await users.getOrLoad('nobody')
await users.set('nobody', null)
console.log(quiz, nobody)

// docs/state.md, shared map
const flags = cluster.map<boolean>('flags')
await flags.set('dark-mode', true, { ttlMs: 3_600_000 })
const entry = await flags.getEntry('dark-mode')
if (entry) await flags.compareAndSet('dark-mode', entry.version, false)
const visits: number = await cluster.map<number>('counters').increment('visits')
console.log(visits, await flags.entries({ prefix: 'dark-' }))

await cluster.close()                                   // drain, leave, disconnect
