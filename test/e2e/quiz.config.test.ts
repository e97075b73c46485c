// The quiz reference app's shared settings (cluster.config, app 'quiz') under `chorus up` with three
// instances: `chorus config set quiz.uploadsEnabled false` switches uploads off on every instance,
// without a restart, and `true` switches them on again — each instance checked on its own port.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { chorus } from '../helpers/cli.js'
import { eventually } from '../helpers/cluster.js'
import { asUser, login, startQuiz, type QuizCluster, type QuizUser } from '../helpers/quiz.js'

/** How long a change may take to reach every instance before the test fails (bus, else the poll). */
const REACH_MS = 20_000

describe('the quiz app reads its settings from cluster.config', () => {
  let quiz: QuizCluster
  let alice: QuizUser
  const ports = () => [1, 2, 3].map((i) => quiz.port + i)
  const upload = async (port: number) => {
    const form = new FormData()
    form.append('file', new Blob([Buffer.from(`report from port ${port}\n`)]), 'report.txt')
    const res = await fetch(`http://127.0.0.1:${port}/api/exercises/1/submission`, { method: 'POST', body: form, headers: asUser(alice, false) })
    return { status: res.status, body: (await res.json()) as { error?: string; instance?: string } }
  }
  const set = async (key: string, value: string) => {
    const run = await chorus(['config', 'set', key, value], quiz.dir, { CHORUS_SECRET: quiz.secret })
    expect(run.stderr).toBe('')
    expect(run.code).toBe(0)
  }

  beforeAll(async () => {
    quiz = await startQuiz()
    alice = await login(quiz.base, 'alice', 'alice')
  })
  afterAll(async () => {
    await quiz?.stop()
  })

  it('runs the schema defaults on every instance: uploads on, 60 s quizzes', async () => {
    for (const port of ports()) {
      const settings = (await (await fetch(`http://127.0.0.1:${port}/api/settings`)).json()) as { uploadsEnabled: boolean; defaultDurationS: number }
      expect(settings).toMatchObject({ uploadsEnabled: true, defaultDurationS: 60 })
      const res = await upload(port)
      expect(res.status).toBe(200)
      expect(res.body.instance).toBe(`instance-${port - quiz.port}`)
    }
  })

  it('refuses uploads on every instance once chorus config set switches them off, and takes them again once switched on', async () => {
    await set('quiz.uploadsEnabled', 'false')
    for (const port of ports()) {
      const refused = await eventually(async () => {
        const res = await upload(port)
        return res.status === 403 ? res : null
      }, `port ${port} refusing uploads`, REACH_MS, 100)
      expect(refused.body.error).toBe('uploads-disabled')
    }
    await set('quiz.uploadsEnabled', 'true')
    for (const port of ports()) {
      const accepted = await eventually(async () => {
        const res = await upload(port)
        return res.status === 200 ? res : null
      }, `port ${port} taking uploads again`, REACH_MS, 100)
      expect(accepted.body.instance).toBe(`instance-${port - quiz.port}`)
    }
  })
})
