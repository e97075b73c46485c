// Live quizzes: the instructor starts a quiz on one instance and every student's page on every
// instance shows it at once (STOMP /topic); answers arrive over HTTP or STOMP; a transactional job
// at the due date evaluates the quiz exactly once cluster-wide; each student gets their result on
// /user/queue/results wherever they are connected; the instructor watches live counts.
import { HttpError, requireUser } from './auth.mjs'
import { quizSettings } from './settings.mjs'

const courseTopic = (courseId) => `/topic/course/${courseId}`
const statsTopic = (courseId) => `/topic/course/${courseId}/stats`

/** What students may see of a quiz: no answers. */
export function publicQuiz(q) {
  return {
    id: q.id,
    courseId: q.course_id,
    title: q.title,
    durationS: q.duration_s,
    state: q.state,
    run: q.run,
    startedAt: q.started_at,
    dueAt: q.due_at,
    questions: q.questions.map(({ id, text, choices }) => ({ id, text, choices })),
  }
}

export function registerQuiz(app, { cluster, sql }) {
  // With QUIZ_SCHEDULING_ROLE=1 every instance agrees that evaluations run only where the
  // `scheduling` role is (chorus up --roles scheduling, or CHORUS_ROLES), with failover among them.
  const schedulingOnly = process.env.QUIZ_SCHEDULING_ROLE === '1'
  const quizzes = cluster.cache('quiz.definitions', {
    max: 1000,
    load: async (id) => {
      const [q] = await sql`select * from quiz.quizzes where id = ${Number(id)}`
      if (!q) throw new HttpError(404, 'no-such-quiz', `quiz ${id} does not exist`)
      return q
    },
  })
  const courses = cluster.cache('quiz.courses', { max: 10, load: async () => sql`select id, title from quiz.courses order by id` })
  // Every answer counts here: a hot counter, sharded per instance and written in batches, so
  // thousands of students answering at once do not queue on one row lock.
  const counters = cluster.counter('quiz.answers')

  const getQuiz = (id) => {
    if (!/^\d{1,9}$/.test(String(id))) throw new HttpError(400, 'bad-quiz-id', 'a quiz id is a number')
    return quizzes.getOrLoad(String(id))
  }

  app.get('/api/courses', async (req) => {
    requireUser(req)
    return courses.getOrLoad('all')
  })

  app.get('/api/courses/:id', async (req) => {
    const user = requireUser(req)
    const courseId = Number(req.params.id)
    const rows = await sql`select id from quiz.quizzes where course_id = ${courseId} order by id`
    const list = await Promise.all(rows.map((r) => getQuiz(r.id)))
    const results = await sql`
      select r.quiz_id, r.run, r.score, r.total from quiz.results r
      join quiz.quizzes q on q.id = r.quiz_id and q.run = r.run
      where q.course_id = ${courseId} and r.student = ${user.name}`
    const exercises = await sql`
      select e.id, e.title, e.max_bytes, s.filename, s.size, s.uploaded_at
      from quiz.exercises e left join quiz.submissions s on s.exercise_id = e.id and s.student = ${user.name}
      where e.course_id = ${courseId} order by e.id`
    return {
      quizzes: list.map((q) => (user.role === 'instructor' ? { ...publicQuiz(q), questions: q.questions } : publicQuiz(q))),
      results,
      exercises,
      serverNow: new Date().toISOString(),
    }
  })

  // The instructor edits a quiz that is not running; every instance drops its cached copy.
  app.put('/api/quizzes/:id', async (req) => {
    requireUser(req, 'instructor')
    const q = await getQuiz(req.params.id)
    const { title, durationS = quizSettings(cluster).defaultDurationS } = req.body ?? {}
    if (typeof title !== 'string' || title.length < 1 || title.length > 200) throw new HttpError(400, 'bad-title', 'a title is 1-200 characters')
    if (!Number.isInteger(durationS) || durationS < 5 || durationS > 3600) throw new HttpError(400, 'bad-duration', 'a duration is 5-3600 seconds')
    const [row] = await sql`update quiz.quizzes set title = ${title}, duration_s = ${durationS} where id = ${q.id} and state <> 'running' returning *`
    if (!row) throw new HttpError(409, 'quiz-running', 'a running quiz cannot be edited')
    await quizzes.delete(String(q.id))
    return publicQuiz(row)
  })

  app.post('/api/quizzes/:id/start', async (req) => {
    const user = requireUser(req, 'instructor')
    const q = await getQuiz(req.params.id)
    const [row] = await sql`
      update quiz.quizzes set state = 'running', run = run + 1, started_at = now(),
        due_at = now() + duration_s * interval '1 second', evaluated_at = null
      where id = ${q.id} and state <> 'running' returning *`
    if (!row) throw new HttpError(409, 'quiz-running', 'this quiz is already running')
    await quizzes.delete(String(q.id))
    const runAt = new Date(row.due_at)
    await cluster.jobs.enqueue('quiz.evaluate', { quizId: row.id, run: row.run }, { runAt, key: `evaluate:${row.id}:${row.run}` })
    await cluster.jobs.enqueue('quiz.deliver', { quizId: row.id, run: row.run }, { runAt: new Date(runAt.getTime() + 300), key: `deliver:${row.id}:${row.run}` })
    await cluster.realtime.publish(courseTopic(row.course_id), { type: 'quiz-started', quiz: publicQuiz(row), publishedAt: Date.now(), by: user.name })
    return publicQuiz(row)
  })

  async function answer(user, quizId, body) {
    if (user.role !== 'student') throw new HttpError(403, 'forbidden', 'only students answer quizzes')
    const q = await getQuiz(quizId)
    const { questionId, choice } = body ?? {}
    const question = q.questions.find((x) => x.id === questionId)
    if (typeof questionId !== 'string' || !question) throw new HttpError(400, 'bad-question', 'unknown question')
    if (!Number.isInteger(choice) || choice < 0 || choice >= question.choices.length) throw new HttpError(400, 'bad-choice', 'choice out of range')
    // The due date is checked on database time, in the same statement that records the answer.
    const [row] = await sql`
      insert into quiz.answers (quiz_id, run, student, question_id, choice)
      select q.id, q.run, ${user.name}, ${questionId}, ${choice} from quiz.quizzes q
      where q.id = ${q.id} and q.state = 'running' and now() < q.due_at
      on conflict (quiz_id, run, student, question_id) do update set choice = excluded.choice, answered_at = now()
      returning run, (xmax = 0) as inserted`
    if (!row) throw new HttpError(409, 'quiz-closed', 'this quiz is not open for answers')
    if (row.inserted) await counters.add(`${q.id}:${row.run}`)
    return { ok: true, quizId: q.id, run: row.run, questionId, choice }
  }

  app.post('/api/quizzes/:id/answers', async (req) => answer(requireUser(req), req.params.id, req.body))

  cluster.realtime.handle('/app/quiz/*/answer', async (message) => {
    const quizId = message.destination.split('/')[3]
    let body
    try {
      body = JSON.parse(message.body)
    } catch {
      throw new HttpError(400, 'bad-json', 'the answer must be JSON')
    }
    await answer(message.principal, quizId, body)
  })

  app.get('/api/quizzes/:id/result', async (req) => {
    const user = requireUser(req)
    const q = await getQuiz(req.params.id)
    const [r] = await sql`select score, total, run from quiz.results where quiz_id = ${q.id} and run = ${q.run} and student = ${user.name}`
    return r ?? null
  })

  app.get('/api/quizzes/:id/statistics', async (req) => {
    requireUser(req, 'instructor')
    const q = await getQuiz(req.params.id)
    // `answersCounted`: the hot counter's exact total, beside the rows it counts.
    return { ...(await statistics(sql, q.id, q.run)), answersCounted: await counters.get(`${q.id}:${q.run}`) }
  })

  // Exactly once: the results and the evaluation record commit with the job's completion.
  cluster.jobs.define('quiz.evaluate', async ({ quizId, run }, ctx) => {
    const tx = ctx.sql
    const [q] = await tx`select * from quiz.quizzes where id = ${quizId} for update`
    if (!q || q.run !== run || q.state !== 'running') return
    const key = new Map(q.questions.map((x) => [x.id, x.answer]))
    const answers = await tx`select student, question_id, choice from quiz.answers where quiz_id = ${quizId} and run = ${run}`
    const scores = new Map()
    for (const a of answers) scores.set(a.student, (scores.get(a.student) ?? 0) + (key.get(a.question_id) === a.choice ? 1 : 0))
    const students = [...scores.keys()]
    if (students.length > 0) {
      await tx`
        insert into quiz.results (quiz_id, run, student, score, total)
        select ${quizId}, ${run}, s, sc, ${q.questions.length} from unnest(${students}::text[], ${students.map((s) => scores.get(s))}::int[]) as t(s, sc)`
    }
    await tx`update quiz.quizzes set state = 'evaluated', evaluated_at = now() where id = ${quizId}`
    await tx`insert into quiz.evaluations (quiz_id, run, instance, students) values (${quizId}, ${run}, ${cluster.instanceId}, ${students.length})`
  }, { transactional: true, retries: 5, ...(schedulingOnly ? { roles: ['scheduling'] } : {}) })

  // After the evaluation committed: results to each student, statistics to the course.
  cluster.jobs.define('quiz.deliver', async ({ quizId, run }) => {
    const [q] = await sql`select * from quiz.quizzes where id = ${quizId}`
    if (!q || q.run !== run) return
    if (q.state !== 'evaluated') throw new Error('not evaluated yet')
    await quizzes.delete(String(quizId))
    const results = await sql`select student, score, total from quiz.results where quiz_id = ${quizId} and run = ${run}`
    await Promise.all(results.map((r) => cluster.realtime.sendToUser(r.student, '/user/queue/results', { quizId, run, title: q.title, score: r.score, total: r.total })))
    const stats = await statistics(sql, quizId, run)
    await cluster.realtime.publish(courseTopic(q.course_id), { type: 'quiz-ended', quizId, run })
    await cluster.realtime.publish(statsTopic(q.course_id), { type: 'statistics', quizId, run, ...stats })
  }, { retries: 30, backoff: { delayMs: 250, factor: 1.5, maxDelayMs: 2000, jitter: 0.1 } })

  // One instance publishes live participant and answer counts for the instructors.
  cluster.singleton('quiz.live-stats', {
    start(signal) {
      const timer = setInterval(async () => {
        try {
          const presence = await cluster.realtime.presence()
          const names = Object.keys(presence.users).filter(Boolean)
          const [{ n }] = await sql`select count(*)::int as n from quiz.users where role = 'student' and name = any(${names})`
          const running = await sql`select id, course_id, run, due_at from quiz.quizzes where state = 'running'`
          for (const c of await courses.getOrLoad('all')) {
            const live = await Promise.all(running.filter((r) => r.course_id === c.id).map(async (r) => ({
              quizId: r.id, run: r.run, dueAt: r.due_at, answers: await counters.get(`${r.id}:${r.run}`),
            })))
            await cluster.realtime.publish(statsTopic(c.id), { type: 'live', participants: n, sessions: presence.total, byInstance: presence.instances, running: live, at: Date.now() })
          }
        } catch (err) {
          cluster.log.warn({ err }, 'live stats failed')
        }
      }, 1000)
      signal.addEventListener('abort', () => clearInterval(timer))
    },
  })
}

async function statistics(sql, quizId, run) {
  const [agg] = await sql`
    select count(*)::int as students, coalesce(avg(score), 0)::float8 as average, coalesce(max(total), 0)::int as total
    from quiz.results where quiz_id = ${quizId} and run = ${run}`
  const perQuestion = await sql`
    select question_id, choice, count(*)::int as n from quiz.answers where quiz_id = ${quizId} and run = ${run}
    group by question_id, choice order by question_id, choice`
  return { ...agg, perQuestion }
}
