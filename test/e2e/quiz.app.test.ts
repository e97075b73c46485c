import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import yauzl from 'yauzl'
import { asUser, login, startQuiz, type QuizCluster } from '../helpers/quiz.js'

/** Reads every entry of a zip held in memory: name → content. */
function unzip(buf: Buffer): Promise<Map<string, Buffer>> {
  return new Promise((resolve, reject) => {
    yauzl.fromBuffer(buf, { lazyEntries: true }, (err, zip) => {
      if (err || !zip) return reject(err)
      const out = new Map<string, Buffer>()
      zip.on('entry', (entry: yauzl.Entry) => {
        zip.openReadStream(entry, (e, stream) => {
          if (e || !stream) return reject(e)
          const chunks: Buffer[] = []
          stream.on('data', (c: Buffer) => chunks.push(c))
          stream.on('end', () => {
            out.set(entry.fileName, Buffer.concat(chunks))
            zip.readEntry()
          })
        })
      })
      zip.on('end', () => resolve(out))
      zip.on('error', reject)
      zip.readEntry()
    })
  })
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex')

describe('the quiz app on a 3-instance cluster', () => {
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

  it('takes two uploads at once on different instances and exports both, intact, in one zip', async () => {
    const alice = await login(`http://127.0.0.1:${quiz.port + 1}`, 'alice', 'alice')
    const bob = await login(`http://127.0.0.1:${quiz.port + 2}`, 'bob', 'bob')
    const files = { alice: Buffer.from('alice report\n'.repeat(2000)), bob: Buffer.from(Array.from({ length: 50_000 }, (_, i) => i % 251)) }
    const upload = async (port: number, who: { cookie: string; csrfToken: string }, name: string, data: Buffer) => {
      const form = new FormData()
      form.append('file', new Blob([data]), name)
      const res = await fetch(`http://127.0.0.1:${port}/api/exercises/1/submission`, { method: 'POST', body: form, headers: asUser(who, false) })
      return { status: res.status, body: (await res.json()) as { instance: string; sha256: string; size: number } }
    }
    const [a, b] = await Promise.all([upload(quiz.port + 1, alice, 'report.txt', files.alice), upload(quiz.port + 2, bob, 'data.bin', files.bob)])
    expect([a.status, b.status]).toEqual([200, 200])
    expect(a.body.instance).not.toBe(b.body.instance)
    expect(a.body.sha256).toBe(sha(files.alice))
    expect(b.body.sha256).toBe(sha(files.bob))

    const teacher = await login(quiz.base, 'teacher', 'teacher')
    const started = await fetch(`${quiz.base}/api/exercises/1/export`, { method: 'POST', headers: asUser(teacher, false) })
    expect(started.status).toBe(200)
    let exports: { file: string; files: number }[] = []
    for (let i = 0; i < 100 && exports.length === 0; i++) {
      exports = (await (await fetch(`${quiz.base}/api/exports`, { headers: { cookie: teacher.cookie } })).json()) as typeof exports
      if (exports.length === 0) await new Promise((r) => setTimeout(r, 200))
    }
    expect(exports[0]!.files).toBe(2)
    // Downloaded through the balancer: whichever instance answers reads the shared exports area.
    const zip = Buffer.from(await (await fetch(`${quiz.base}/api/exports/${exports[0]!.file}`, { headers: { cookie: teacher.cookie } })).arrayBuffer())
    const entries = await unzip(zip)
    expect([...entries.keys()].sort()).toEqual(['alice/report.txt', 'bob/data.bin'])
    expect(sha(entries.get('alice/report.txt')!)).toBe(sha(files.alice))
    expect(sha(entries.get('bob/data.bin')!)).toBe(sha(files.bob))
  })

  it('refuses bad input with clear errors and records nothing', async () => {
    const teacher = await login(quiz.base, 'teacher', 'teacher')
    const carol = await login(quiz.base, 'carol', 'carol')
    const asCarol = asUser(carol)

    // A student calling instructor actions.
    const start = await fetch(`${quiz.base}/api/quizzes/2/start`, { method: 'POST', headers: asUser(carol, false) })
    expect(start.status).toBe(403)
    expect(((await start.json()) as { error: string }).error).toBe('forbidden')
    expect((await fetch(`${quiz.base}/api/exercises/1/export`, { method: 'POST', headers: asUser(carol, false) })).status).toBe(403)
    const [q] = await sql`select state, run from quiz.quizzes where id = 2`
    expect(q!.state).toBe('ready')

    // Answers while the quiz is not running, then malformed answers while it runs.
    const notRunning = await fetch(`${quiz.base}/api/quizzes/2/answers`, { method: 'POST', headers: asCarol, body: JSON.stringify({ questionId: 'c1', choice: 1 }) })
    expect(notRunning.status).toBe(409)
    expect((await fetch(`${quiz.base}/api/quizzes/2`, { method: 'PUT', headers: asUser(teacher), body: JSON.stringify({ title: 'Capitals (quick)', durationS: 5 }) })).status).toBe(200)
    expect((await fetch(`${quiz.base}/api/quizzes/2/start`, { method: 'POST', headers: asUser(teacher, false) })).status).toBe(200)
    const bad = [
      ['not json', '{"questionId":'],
      ['unknown question', JSON.stringify({ questionId: 'nope', choice: 0 })],
      ['choice out of range', JSON.stringify({ questionId: 'c1', choice: 9 })],
      ['choice not a number', JSON.stringify({ questionId: 'c1', choice: '1' })],
    ] as const
    for (const [what, body] of bad) {
      const res = await fetch(`${quiz.base}/api/quizzes/2/answers`, { method: 'POST', headers: asCarol, body })
      expect(res.status, what).toBe(400)
    }
    const good = await fetch(`${quiz.base}/api/quizzes/2/answers`, { method: 'POST', headers: asCarol, body: JSON.stringify({ questionId: 'c1', choice: 1 }) })
    expect(good.status).toBe(200)
    // After the due date.
    await new Promise((r) => setTimeout(r, 5500))
    const late = await fetch(`${quiz.base}/api/quizzes/2/answers`, { method: 'POST', headers: asCarol, body: JSON.stringify({ questionId: 'c2', choice: 2 }) })
    expect(late.status).toBe(409)
    const answers = await sql`select question_id, choice from quiz.answers where quiz_id = 2 and student = 'carol'`
    expect(answers.map((a) => [a.question_id, a.choice])).toEqual([['c1', 1]])

    // The evaluation ran exactly once for this run.
    for (let i = 0; i < 100; i++) {
      const [e] = await sql`select count(*)::int as n from quiz.evaluations where quiz_id = 2`
      if (e!.n > 0) break
      await new Promise((r) => setTimeout(r, 100))
    }
    const evaluations = await sql`select run, students from quiz.evaluations where quiz_id = 2`
    expect(evaluations).toHaveLength(1)
    expect(evaluations[0]!.students).toBe(1)

    // An upload over the exercise's limit (1 MiB).
    const form = new FormData()
    form.append('file', new Blob([Buffer.alloc(1024 * 1024 + 10, 7)]), 'huge.bin')
    const huge = await fetch(`${quiz.base}/api/exercises/1/submission`, { method: 'POST', body: form, headers: asUser(carol, false) })
    expect(huge.status).toBe(413)
    expect(await sql`select 1 from quiz.submissions where student = 'carol'`).toHaveLength(0)
    expect(existsSync(join(quiz.dir, '.chorus/files/uploads/exercise-1/carol/huge.bin'))).toBe(false)
    expect(existsSync(join(quiz.dir, '.chorus/files/uploads/exercise-1/alice/report.txt'))).toBe(true)
    // Not logged in.
    expect((await fetch(`${quiz.base}/api/courses/1`)).status).toBe(401)
  })
})
