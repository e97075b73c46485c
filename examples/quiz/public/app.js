// The quiz page: plain DOM and @stomp/stompjs. The STOMP connection resumes after a reconnect by
// naming the last message id it saw (`chorus-last-id`); on a `chorus-gap` notice it refetches.
const $ = (sel) => document.querySelector(sel)
const h = (tag, attrs = {}, ...children) => {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v)
    else if (v === true) el.setAttribute(k, '')
    else if (v !== false && v != null) el.setAttribute(k, v)
  }
  for (const c of children.flat()) if (c != null) el.append(c instanceof Node ? c : document.createTextNode(String(c)))
  return el
}

const state = { me: null, course: null, courseId: null, live: null, stats: new Map(), picks: new Map(), resultFor: new Map(), exports: [] }
let client = null
// Message ids are cluster-wide and delivered in order on a connection, so the highest id seen on
// any subscription is where every subscription resumes after a reconnect.
let lastSeen = null
let clockOffset = 0

async function api(path, opts = {}) {
  const headers = opts.body && !(opts.body instanceof FormData) ? { 'content-type': 'application/json' } : {}
  // Every state-changing request carries the session's CSRF token (from /api/login or /api/me).
  if (opts.method && opts.method !== 'GET' && state.me?.csrfToken) headers['x-csrf-token'] = state.me.csrfToken
  const res = await fetch(path, { credentials: 'same-origin', ...opts, headers })
  const body = res.headers.get('content-type')?.includes('json') ? await res.json() : await res.text()
  if (!res.ok) throw Object.assign(new Error(body?.message ?? res.statusText), { status: res.status, body })
  return body
}

function toast(text) {
  const t = $('#toast')
  t.textContent = text
  t.classList.add('show')
  clearTimeout(toast.timer)
  toast.timer = setTimeout(() => t.classList.remove('show'), 2500)
}

function setConn(label, cls) {
  const b = $('#conn')
  b.textContent = label
  b.className = `badge ${cls}`
}

// ---- login ------------------------------------------------------------------------------------

$('#login-form').addEventListener('submit', async (e) => {
  e.preventDefault()
  const form = new FormData(e.target)
  try {
    state.me = await api('/api/login', { method: 'POST', body: JSON.stringify({ name: form.get('name'), password: form.get('password') }) })
    $('#login-error').textContent = ''
    await enter()
  } catch (err) {
    $('#login-error').textContent = err.message
  }
})

$('#logout').addEventListener('click', async () => {
  await api('/api/logout', { method: 'POST' }).catch(() => undefined)
  await client?.deactivate()
  location.reload()
})

async function boot() {
  try {
    state.me = await api('/api/me')
    await enter()
  } catch {
    $('#login').hidden = false
  }
}

async function enter() {
  $('#login').hidden = true
  $('#course').hidden = false
  $('#logout').hidden = false
  $('#who').textContent = `${state.me.user} · ${state.me.role}`
  const courses = await api('/api/courses')
  state.courseId = courses[0].id
  $('#course-title').textContent = courses[0].title
  await refresh()
  connect()
  setInterval(tick, 250)
}

async function refresh() {
  state.course = await api(`/api/courses/${state.courseId}`)
  clockOffset = new Date(state.course.serverNow).getTime() - Date.now()
  for (const r of state.course.results) state.resultFor.set(r.quiz_id, r)
  if (state.me.role === 'instructor') state.exports = await api('/api/exports')
  state.settings = await api('/api/settings')
  render()
}

// ---- realtime ---------------------------------------------------------------------------------

function connect() {
  let connectedOnce = false
  client = new StompJs.Client({
    brokerURL: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/stomp`,
    connectHeaders: { passcode: state.me.stompToken },
    reconnectDelay: 500,
    heartbeatIncoming: 10000,
    heartbeatOutgoing: 10000,
  })
  client.onConnect = (frame) => {
    const resumed = connectedOnce
    connectedOnce = true
    if (!resumed && frame.headers['chorus-head']) lastSeen = frame.headers['chorus-head']
    const instance = frame.headers['chorus-instance'] ?? '?'
    setConn(`${resumed ? 'resumed' : 'connected'} · ${instance}`, resumed ? 'resumed' : 'connected')
    $('#conn').title = `realtime connection on ${instance}`
    $('#conn').dataset.instance = instance
    subscribe(`/topic/course/${state.courseId}`, onCourseEvent)
    subscribe('/user/queue/results', onResult)
    if (state.me.role === 'instructor') subscribe(`/topic/course/${state.courseId}/stats`, onStats)
    if (resumed) refresh()
  }
  client.onWebSocketClose = () => setConn('reconnecting…', 'reconnecting')
  client.onStompError = (frame) => toast(frame.headers.message ?? 'realtime error')
  client.activate()
}

function subscribe(destination, handler) {
  client.subscribe(destination, (message) => {
    if (message.headers['chorus-gap']) {
      setConn('gap → refreshed', 'gap')
      refresh()
      return
    }
    const id = message.headers['message-id']
    if (lastSeen === null || Number(id) > Number(lastSeen)) lastSeen = id
    handler(JSON.parse(message.body))
  }, lastSeen !== null ? { 'chorus-last-id': lastSeen } : {})
}

function onCourseEvent(event) {
  if (event.type === 'quiz-started') {
    const quizzes = state.course.quizzes.map((q) => (q.id === event.quiz.id ? { ...q, ...event.quiz, questions: q.questions?.[0]?.answer !== undefined ? q.questions : event.quiz.questions } : q))
    state.course.quizzes = quizzes
    state.picks.clear()
    state.resultFor.delete(event.quiz.id)
    toast(`“${event.quiz.title}” has started`)
  }
  if (event.type === 'quiz-ended') {
    state.course.quizzes = state.course.quizzes.map((q) => (q.id === event.quizId ? { ...q, state: 'evaluated' } : q))
  }
  render()
}

function onResult(result) {
  state.resultFor.set(result.quizId, { quiz_id: result.quizId, run: result.run, score: result.score, total: result.total })
  toast(`Your result: ${result.score}/${result.total}`)
  render()
}

function onStats(event) {
  if (event.type === 'live') state.live = event
  if (event.type === 'statistics') state.stats.set(event.quizId, event)
  if (event.type === 'export-ready') {
    toast(`Export ready: ${event.file}`)
    api('/api/exports').then((e) => { state.exports = e; render() })
  }
  render()
}

// ---- views ------------------------------------------------------------------------------------

const now = () => Date.now() + clockOffset
const remaining = (q) => Math.max(0, Math.ceil((new Date(q.dueAt).getTime() - now()) / 1000))
const fmt = (s) => `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`

/** The countdown moves: redraw only the panels without form inputs. */
function tick() {
  if (!state.course) return
  const running = state.course.quizzes.find((q) => q.state === 'running')
  $('#quiz-panel').replaceChildren(state.me.role === 'instructor' ? instructorQuizzes(running) : studentQuiz(running))
}

function render() {
  if (!state.course) return
  const running = state.course.quizzes.find((q) => q.state === 'running')
  $('#quiz-panel').replaceChildren(state.me.role === 'instructor' ? instructorQuizzes(running) : studentQuiz(running))
  $('#results-panel').replaceChildren(state.me.role === 'instructor' ? statisticsCard() : resultsCard())
  $('#live-panel').replaceChildren(state.me.role === 'instructor' ? liveCard(running) : '')
  $('#exercise-panel').replaceChildren(exerciseCard())
}

function instructorQuizzes(running) {
  return h('div', { class: 'card' }, h('h2', {}, 'Quizzes'), h('div', { class: 'quiz-list' },
    state.course.quizzes.map((q) => h('div', { class: 'quiz-row' },
      h('div', {}, h('div', {}, q.title, h('span', { class: 'pill' }, q.state)), h('div', { class: 'meta' }, `${q.questions.length} questions · ${q.durationS} s${q.state === 'running' ? ` · ${fmt(remaining(q))} left` : ''}`)),
      h('button', { disabled: !!running, onclick: () => start(q) }, q.state === 'running' ? 'Running…' : 'Start')))))
}

async function start(q) {
  try {
    await api(`/api/quizzes/${q.id}/start`, { method: 'POST' })
  } catch (err) {
    toast(err.message)
  }
}

function studentQuiz(q) {
  if (!q) {
    return h('div', { class: 'card' }, h('h2', {}, 'No quiz running'), h('p', { class: 'hint' }, 'When your instructor starts a quiz, it appears here at once — no reload needed.'))
  }
  const left = remaining(q)
  return h('div', { class: 'card' },
    h('div', { class: 'quiz-row', style: 'background:transparent;padding:0' }, h('h2', {}, q.title), h('div', { class: 'countdown', 'data-testid': 'countdown' }, left > 0 ? fmt(left) : 'evaluating…')),
    q.questions.map((question) => h('div', { class: 'question' }, h('p', {}, question.text), h('div', { class: 'choices' },
      question.choices.map((c, i) => h('button', {
        class: `choice${state.picks.get(question.id) === i ? ' picked' : ''}`,
        disabled: left === 0,
        onclick: () => pick(q, question, i),
      }, c))))))
}

async function pick(q, question, choice) {
  try {
    await api(`/api/quizzes/${q.id}/answers`, { method: 'POST', body: JSON.stringify({ questionId: question.id, choice }) })
    state.picks.set(question.id, choice)
    render()
  } catch (err) {
    toast(err.message)
  }
}

function resultsCard() {
  const rows = state.course.quizzes.filter((q) => state.resultFor.has(q.id))
  return h('div', { class: 'card' }, h('h2', {}, 'Your results'),
    rows.length === 0 ? h('p', { class: 'hint' }, 'Results appear here when a quiz is evaluated.') :
      rows.map((q) => h('div', { class: 'stat' }, h('span', {}, q.title), h('span', { class: 'score', 'data-testid': `result-${q.id}` }, `${state.resultFor.get(q.id).score}/${state.resultFor.get(q.id).total}`))))
}

function liveCard(running) {
  const live = state.live
  const answers = running && live ? live.running.find((r) => r.quizId === running.id)?.answers ?? 0 : 0
  return h('div', { class: 'card' }, h('h2', {}, 'Live'),
    h('div', { class: 'stat' }, h('span', {}, 'Students connected'), h('b', { class: 'big', 'data-testid': 'participants' }, live?.participants ?? '–')),
    h('div', { class: 'stat' }, h('span', {}, 'Answers (running quiz)'), h('b', {}, running ? answers : '–')),
    h('div', { class: 'stat' }, h('span', {}, 'Sessions per instance'), h('b', {}, live ? Object.entries(live.byInstance).map(([k, v]) => `${k}: ${v}`).join(' · ') || '–' : '–')))
}

function statisticsCard() {
  const items = [...state.stats.values()]
  return h('div', { class: 'card' }, h('h2', {}, 'Statistics'),
    items.length === 0 ? h('p', { class: 'hint' }, 'Statistics appear when a quiz is evaluated.') :
      items.map((s) => {
        const quiz = state.course.quizzes.find((q) => q.id === s.quizId)
        return h('div', {}, h('div', { class: 'stat' }, h('span', {}, quiz?.title ?? `quiz ${s.quizId}`), h('b', {}, `${s.students} students · average ${s.average.toFixed(2)}/${s.total}`)),
          h('div', { class: 'bars' }, s.perQuestion.map((p) => {
            const max = Math.max(1, ...s.perQuestion.map((x) => x.n))
            return h('div', { class: 'bar-row' }, h('span', {}, `${p.question_id} → ${p.choice + 1}`), h('div', { class: 'bar-fill', style: `width:${(p.n / max) * 100}%` }), h('span', {}, p.n))
          })))
      }))
}

function exerciseCard() {
  return h('div', {}, state.course.exercises.map((e) => h('div', { class: 'card' },
    h('h2', {}, e.title),
    state.me.role === 'student'
      ? h('form', { onsubmit: (ev) => upload(ev, e) },
          h('p', { class: 'hint' }, e.filename ? `Submitted: ${e.filename} (${e.size} bytes)` : `No submission yet · limit ${Math.round(e.max_bytes / 1024)} KiB`),
          state.settings?.uploadsEnabled === false
            ? h('p', { class: 'hint uploads-off' }, 'Uploads are switched off for now.')
            : [h('input', { type: 'file', name: 'file', required: true }), ' ', h('button', { type: 'submit' }, 'Upload')])
      : h('div', {}, h('button', { class: 'secondary', onclick: () => exportAll(e) }, 'Export all submissions'),
          h('div', { style: 'margin-top:10px' }, state.exports.filter((x) => x.exercise_id === e.id).slice(0, 5).map((x) =>
            h('div', { class: 'stat' }, h('a', { href: `/api/exports/${encodeURIComponent(x.file)}` }, x.file), h('span', { class: 'hint' }, `${x.files} files`))))))))
}

async function upload(ev, e) {
  ev.preventDefault()
  try {
    const r = await api(`/api/exercises/${e.id}/submission`, { method: 'POST', body: new FormData(ev.target) })
    toast(`Uploaded ${r.filename} (${r.size} bytes)`)
    await refresh()
  } catch (err) {
    toast(err.message)
  }
}

async function exportAll(e) {
  try {
    await api(`/api/exercises/${e.id}/export`, { method: 'POST' })
    toast('Export started…')
  } catch (err) {
    toast(err.message)
  }
}

boot()
