// The quiz app's own tables (schema `quiz`, beside Chorus's), created once under a cluster-wide
// lock, and seeded with a demo course, quizzes, an upload exercise and demo users.
import { randomBytes, scryptSync, timingSafeEqual } from 'node:crypto'
import postgres from 'postgres'

export function openDb(url) {
  // CHORUS_DIRECT_URL set means DATABASE_URL goes through a pooler in transaction mode, where a
  // named prepared statement may meet another backend: use unnamed statements there.
  const pooled = !!process.env.CHORUS_DIRECT_URL
  return postgres(url, { max: 10, prepare: !pooled, onnotice: () => undefined, connection: { application_name: 'quiz-app' } })
}

const DDL = `
create schema if not exists quiz;
create table if not exists quiz.users (
  name text primary key,
  role text not null check (role in ('instructor', 'student')),
  password_hash text
);
create table if not exists quiz.courses (id serial primary key, title text not null);
create table if not exists quiz.quizzes (
  id serial primary key,
  course_id int not null references quiz.courses(id),
  title text not null,
  duration_s int not null check (duration_s between 5 and 3600),
  questions jsonb not null,
  state text not null default 'ready' check (state in ('ready', 'running', 'evaluated')),
  run int not null default 0,
  started_at timestamptz,
  due_at timestamptz,
  evaluated_at timestamptz
);
create table if not exists quiz.answers (
  quiz_id int not null, run int not null, student text not null, question_id text not null,
  choice int not null, answered_at timestamptz not null default now(),
  primary key (quiz_id, run, student, question_id)
);
create table if not exists quiz.results (
  quiz_id int not null, run int not null, student text not null, score int not null, total int not null,
  primary key (quiz_id, run, student)
);
create table if not exists quiz.evaluations (
  quiz_id int not null, run int not null, instance text not null, evaluated_at timestamptz not null default now(),
  students int not null
);
create table if not exists quiz.exercises (
  id serial primary key, course_id int not null references quiz.courses(id), title text not null, max_bytes int not null
);
create table if not exists quiz.submissions (
  exercise_id int not null, student text not null, filename text not null, size bigint not null, sha256 text not null,
  uploaded_at timestamptz not null default now(), primary key (exercise_id, student)
);
create table if not exists quiz.exports (
  id serial primary key, exercise_id int not null, file text not null, files int not null, created_at timestamptz not null default now()
);
`

const demoQuestions = [
  { id: 'q1', text: 'Which clock decides when a Chorus member is declared down?', choices: ["The member's own clock", "The database's clock", 'The balancer clock', 'NTP'], answer: 1 },
  { id: 'q2', text: 'What does a fencing token protect against?', choices: ['Slow networks', 'A paused lock holder writing after its lease expired', 'SQL injection', 'Cache misses'], answer: 1 },
  { id: 'q3', text: 'A STOMP client reconnects to another instance. How does it get what it missed?', choices: ['It cannot', 'It reloads the page', 'It re-subscribes with the last message id it saw', 'Sticky sessions'], answer: 2 },
]

const capitalQuestions = [
  { id: 'c1', text: 'Capital of Portugal?', choices: ['Porto', 'Lisbon', 'Coimbra'], answer: 1 },
  { id: 'c2', text: 'Capital of Canada?', choices: ['Toronto', 'Vancouver', 'Ottawa', 'Montreal'], answer: 2 },
]

export const demoUsers = [
  { name: 'teacher', role: 'instructor', password: 'teacher' },
  { name: 'alice', role: 'student', password: 'alice' },
  { name: 'bob', role: 'student', password: 'bob' },
  { name: 'carol', role: 'student', password: 'carol' },
]

export function hashPassword(password) {
  const salt = randomBytes(16)
  return `scrypt:${salt.toString('base64')}:${scryptSync(password, salt, 32).toString('base64')}`
}

export function checkPassword(hash, password) {
  const [kind, salt, key] = String(hash ?? '').split(':')
  if (kind !== 'scrypt' || !salt || !key) return false
  const expected = Buffer.from(key, 'base64')
  const actual = scryptSync(password, Buffer.from(salt, 'base64'), expected.length)
  return timingSafeEqual(actual, expected)
}

/** Creates the tables and demo data once for the whole cluster. */
export async function prepare(cluster, sql) {
  await cluster.locks.withLock('quiz:schema', async () => {
    await sql.unsafe(DDL)
    const [{ n }] = await sql`select count(*)::int as n from quiz.courses`
    if (n > 0) return
    for (const u of demoUsers) {
      await sql`insert into quiz.users (name, role, password_hash) values (${u.name}, ${u.role}, ${hashPassword(u.password)}) on conflict do nothing`
    }
    const [course] = await sql`insert into quiz.courses (title) values ('Distributed Systems 101') returning id`
    await sql`insert into quiz.quizzes (course_id, title, duration_s, questions) values
      (${course.id}, 'Cluster basics', 60, ${sql.json(demoQuestions)}),
      (${course.id}, 'Capitals (quick)', 20, ${sql.json(capitalQuestions)})`
    await sql`insert into quiz.exercises (course_id, title, max_bytes) values (${course.id}, 'Upload your lab report', ${1024 * 1024})`
  }, { waitMs: 60_000 })
}
