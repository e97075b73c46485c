// The quiz app run by `chorus up` with its bus on Redis, then on NATS (CHORUS_BUS_URL): a quiz
// started through one instance reaches a student connected over STOMP to another, and the broker
// shows the cluster's subscriptions — every instance and the balancer listen there, not on NOTIFY.
import { createClient } from 'redis'
import { afterAll, describe, expect, it } from 'vitest'
import { natsBinary, noNats, startNats, type NatsServer } from '../helpers/nats.js'
import { asUser, login, startQuiz, type QuizCluster } from '../helpers/quiz.js'
import { noRedis, redisBinary, startRedis, type RedisServer } from '../helpers/redis.js'
import { connectStomp, until } from '../helpers/stomp.js'

async function quizCrossesInstances(quiz: QuizCluster): Promise<void> {
  const teacher = await login(`http://127.0.0.1:${quiz.port + 1}`, 'teacher', 'teacher')
  const alice = await login(`http://127.0.0.1:${quiz.port + 3}`, 'alice', 'alice')
  const student = await connectStomp(`ws://127.0.0.1:${quiz.port + 3}/stomp`, { connectHeaders: { passcode: alice.stompToken } })
  try {
    const seen = [1, 2, 3].map((course) => student.subscribe(`/topic/course/${course}`))
    await new Promise((r) => setTimeout(r, 300)) // the SUBSCRIBE frames reach the gateway
    const started = await fetch(`http://127.0.0.1:${quiz.port + 1}/api/quizzes/2/start`, { method: 'POST', headers: asUser(teacher, false) })
    expect(started.status).toBe(200)
    await until(() => seen.flat().some((m) => (JSON.parse(m.body) as { type: string }).type === 'quiz-started'), 20_000, 'quiz-started on instance 3')
  } finally {
    await student.close()
  }
}

describe.skipIf(!redisBinary)(`the quiz over a Redis bus${redisBinary ? '' : ` (skipped: ${noRedis})`}`, () => {
  let redis: RedisServer
  let quiz: QuizCluster
  afterAll(async () => {
    await quiz?.stop()
    await redis?.broker.stop()
  })

  it('runs a quiz across instances, with every process subscribed on Redis', async () => {
    redis = await startRedis()
    quiz = await startQuiz({ env: { CHORUS_BUS_URL: redis.url } })
    await quizCrossesInstances(quiz)
    const client = createClient({ url: redis.url })
    await client.connect()
    try {
      const channels = await client.pubSubChannels('*')
      expect(channels).toContain('chorus:bus')
      const subscribers = (await client.pubSubNumSub('chorus:bus'))['chorus:bus']
      expect(subscribers).toBeGreaterThanOrEqual(4) // three instances and the balancer
    } finally {
      await client.quit()
    }
  }, 240_000)
})

describe.skipIf(!natsBinary)(`the quiz over a NATS bus${natsBinary ? '' : ` (skipped: ${noNats})`}`, () => {
  let nats: NatsServer
  let quiz: QuizCluster
  afterAll(async () => {
    await quiz?.stop()
    await nats?.broker.stop()
  })

  it('runs a quiz across instances, with every process subscribed on NATS', async () => {
    nats = await startNats({ monitor: true })
    quiz = await startQuiz({ env: { CHORUS_BUS_URL: nats.url } })
    await quizCrossesInstances(quiz)
    const connz = (await (await fetch(`${nats.monitorUrl}/connz?subs=1`)).json()) as { connections: { subscriptions_list?: string[] }[] }
    const subscribed = connz.connections.filter((c) => (c.subscriptions_list ?? []).includes('chorus.bus'))
    expect(subscribed.length).toBeGreaterThanOrEqual(4) // three instances and the balancer
  }, 240_000)
})
