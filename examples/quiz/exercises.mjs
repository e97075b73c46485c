// File-upload exercises: students upload into the shared `uploads` area (atomic writes under path
// locks, so two instances never interleave); the instructor's "export all submissions" job builds a
// zip in the `exports` area, which any instance can then serve.
import { PassThrough } from 'node:stream'
import fastifyMultipart from '@fastify/multipart'
import yazl from 'yazl'
import { HttpError, requireUser } from './auth.mjs'
import { quizSettings } from './settings.mjs'

const safeName = (name) => {
  const base = String(name ?? '').split(/[\\/]/).pop() ?? ''
  const cleaned = base.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '').slice(0, 100)
  if (!cleaned) throw new HttpError(400, 'bad-filename', 'the file needs a name')
  return cleaned
}

export async function registerExercises(app, { cluster, sql }) {
  const uploads = cluster.files.area('uploads')
  const exportsArea = cluster.files.area('exports')
  await app.register(fastifyMultipart, { limits: { files: 1, fields: 5, fileSize: 20 * 1024 * 1024 } })

  const getExercise = async (id) => {
    if (!/^\d{1,9}$/.test(String(id))) throw new HttpError(400, 'bad-exercise-id', 'an exercise id is a number')
    const [e] = await sql`select * from quiz.exercises where id = ${Number(id)}`
    if (!e) throw new HttpError(404, 'no-such-exercise', `exercise ${id} does not exist`)
    return e
  }

  app.post('/api/exercises/:id/submission', async (req) => {
    const user = requireUser(req, 'student')
    // Read per request: switching uploads off (dashboard or `chorus config set`) holds on every instance at once.
    if (!quizSettings(cluster).uploadsEnabled) throw new HttpError(403, 'uploads-disabled', 'uploads are switched off for now')
    const exercise = await getExercise(req.params.id)
    const part = await req.file()
    if (!part) throw new HttpError(400, 'no-file', 'attach a file')
    const filename = safeName(part.filename)
    const dir = `exercise-${exercise.id}/${user.name}`
    let written
    try {
      written = await uploads.write(`${dir}/${filename}`, part.file, { maxBytes: exercise.max_bytes })
    } catch (err) {
      if (err?.code === 'CHORUS_ERR_FILES_TOO_LARGE') throw new HttpError(413, 'too-large', `the limit is ${exercise.max_bytes} bytes`)
      throw err
    }
    if (part.file.truncated) throw new HttpError(413, 'too-large', 'the upload was cut off')
    // One submission per student: the previous file (if its name differs) goes.
    const [previous] = await sql`select filename from quiz.submissions where exercise_id = ${exercise.id} and student = ${user.name}`
    await sql`
      insert into quiz.submissions (exercise_id, student, filename, size, sha256) values (${exercise.id}, ${user.name}, ${filename}, ${written.size}, ${written.sha256})
      on conflict (exercise_id, student) do update set filename = excluded.filename, size = excluded.size, sha256 = excluded.sha256, uploaded_at = now()`
    if (previous && previous.filename !== filename) await uploads.remove(`${dir}/${previous.filename}`).catch(() => undefined)
    return { filename, size: written.size, sha256: written.sha256, instance: cluster.instanceId }
  })

  app.post('/api/exercises/:id/export', async (req) => {
    requireUser(req, 'instructor')
    const exercise = await getExercise(req.params.id)
    const id = await cluster.jobs.enqueue('exercise.export', { exerciseId: exercise.id, courseId: exercise.course_id })
    return { job: id }
  })

  app.get('/api/exports', async (req) => {
    requireUser(req, 'instructor')
    return sql`select id, exercise_id, file, files, created_at from quiz.exports order by id desc limit 50`
  })

  app.get('/api/exports/:file', async (req, reply) => {
    requireUser(req, 'instructor')
    const file = safeName(req.params.file)
    const [row] = await sql`select file from quiz.exports where file = ${file}`
    if (!row) throw new HttpError(404, 'no-such-export', 'no such export')
    const stream = await exportsArea.createReadStream(file)
    reply.header('content-type', 'application/zip').header('content-disposition', `attachment; filename="${file}"`)
    return reply.send(stream)
  })

  cluster.jobs.define('exercise.export', async ({ exerciseId, courseId }, ctx) => {
    const dir = `exercise-${exerciseId}`
    const submissions = await sql`select student, filename, sha256 from quiz.submissions where exercise_id = ${exerciseId} order by student`
    const zip = new yazl.ZipFile()
    const body = new PassThrough()
    zip.outputStream.pipe(body)
    for (const s of submissions) {
      const stream = await uploads.createReadStream(`${dir}/${s.student}/${s.filename}`)
      zip.addReadStream(stream, `${s.student}/${s.filename}`)
    }
    zip.end()
    const file = `exercise-${exerciseId}-${Date.now()}.zip`
    ctx.signal.throwIfAborted()
    await exportsArea.write(file, body, { maxBytes: 512 * 1024 * 1024 })
    await sql`insert into quiz.exports (exercise_id, file, files) values (${exerciseId}, ${file}, ${submissions.length})`
    await cluster.realtime.publish(`/topic/course/${courseId}/stats`, { type: 'export-ready', exerciseId, file, files: submissions.length })
  }, { retries: 2, timeoutMs: 10 * 60_000 })
}
