// The Chorus dashboard page: listens to /api/stream (server-sent events) and redraws each panel
// from the snapshot it receives; charts are inline SVG. Every text goes through textContent, so
// names chosen by clients (Eureka instance ids, job errors) can never become markup.
'use strict'

const state = { snapshot: null, events: [], csrf: null, token: null, confirm: null, busy: new Set(), unfolded: new Set() }

// ---- helpers ---------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue
    if (k === 'class') el.className = v
    else if (k === 'text') el.textContent = v
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v)
    else if (k === 'dataset') Object.assign(el.dataset, v)
    else el.setAttribute(k, v === true ? '' : String(v))
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : document.createTextNode(String(c)))
  return el
}

function svg(tag, attrs) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag)
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v))
  return el
}

const $ = (id) => document.getElementById(id)

/** A link only to an http(s) URL (a `javascript:` or `data:` URL from a registration stays text). */
function link(url) {
  if (!url) return '–'
  let parsed = null
  try {
    parsed = new URL(url)
  } catch {}
  if (!parsed || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') || !/^https?:\/\//i.test(url)) return h('span', { class: 'muted', text: url })
  return h('a', { href: parsed.href, rel: 'noopener noreferrer', target: '_blank', text: url.replace(/^https?:\/\//i, '') })
}

function duration(sec) {
  if (sec === null || sec === undefined) return '–'
  sec = Math.max(0, Math.round(sec))
  if (sec < 60) return `${sec}s`
  if (sec < 3600) return `${Math.floor(sec / 60)}m ${sec % 60}s`
  if (sec < 86400) return `${Math.floor(sec / 3600)}h ${Math.floor((sec % 3600) / 60)}m`
  return `${Math.floor(sec / 86400)}d ${Math.floor((sec % 86400) / 3600)}h`
}

function bytes(n) {
  if (n === null || n === undefined) return '–'
  const units = ['B', 'KB', 'MB', 'GB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++ }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`
}

function rate(n) {
  if (n === null || n === undefined) return '–'
  if (Number.isInteger(n) || n >= 100) return String(Math.round(n))
  return n.toFixed(1)
}

function ago(iso) {
  if (!iso) return '–'
  const s = (Date.now() - new Date(iso).getTime()) / 1000
  return s < 0 ? `in ${duration(-s)}` : `${duration(s)} ago`
}

function clock(iso) {
  const d = new Date(iso)
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' })
}

function fill(tbody, rows, cols, emptyText) {
  tbody.replaceChildren(...(rows.length ? rows : [h('tr', { class: 'empty' }, h('td', { colspan: cols, text: emptyText }))]))
}

// ---- summary & connection ------------------------------------------------------------------

function setLive(stateName, text) {
  const live = $('live')
  live.dataset.state = stateName
  live.querySelector('.live-text').textContent = text
}

function renderSummary(s) {
  const c = s.counts
  const chips = [
    h('span', { class: 'chip' }, h('span', { class: 'pill pill-up', text: 'up' }), h('b', { text: c.up })),
    h('span', { class: 'chip' }, h('span', { class: 'pill pill-draining', text: 'draining' }), h('b', { text: c.draining })),
    h('span', { class: 'chip' }, h('span', { class: 'pill pill-isolated', text: 'isolated' }), h('b', { text: c.isolated })),
    h('span', { class: 'chip' }, h('span', { class: 'pill pill-down', text: 'down' }), h('b', { text: c.down })),
  ]
  if (c.eureka) chips.push(h('span', { class: 'chip' }, 'Eureka ', h('b', { text: c.eureka })))
  $('summary').replaceChildren(...chips)
  document.title = `Chorus · ${c.up} up${c.down ? ` · ${c.down} down` : ''}`
}

// ---- charts --------------------------------------------------------------------------------

function chart(el, title, unit, t, a, b, labels) {
  const W = 320, H = 84, pad = 2
  const max = Math.max(1, ...a, ...(b || []))
  const niceMax = niceCeil(max)
  const n = t.length
  const x = (i) => (n <= 1 ? W : (i / (n - 1)) * W)
  const y = (v) => H - pad - (v / niceMax) * (H - 2 * pad)
  const line = (arr) => arr.map((v, i) => `${i ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join('')
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': `${title} over the last ${duration((t[n - 1] - t[0]) / 1000 || 0)}` })
  for (const f of [0.5, 1]) root.append(svg('line', { class: 'grid-line', x1: 0, x2: W, y1: y(niceMax * f), y2: y(niceMax * f), 'vector-effect': 'non-scaling-stroke' }))
  if (n > 1) {
    root.append(svg('path', { class: 'area-1', d: `${line(a)}L${W},${H}L0,${H}Z` }))
    root.append(svg('path', { class: 'line-1', d: line(a), 'vector-effect': 'non-scaling-stroke' }))
    if (b) root.append(svg('path', { class: 'line-2', d: line(b), 'vector-effect': 'non-scaling-stroke' }))
  }
  const current = n ? a[n - 1] : 0
  const span = n > 1 ? duration((t[n - 1] - t[0]) / 1000) : '–'
  el.replaceChildren(
    h('div', { class: 'chart-title' }, h('h2', { text: title }), h('span', { class: 'muted small', text: `max ${rate(niceMax)} · last ${span}` })),
    h('div', { class: 'chart-value' }, rate(current), h('small', { text: unit })),
    h('div', { class: 'chart' }, root),
    h('div', { class: 'legend' }, h('span', {}, h('i', { class: 'k1' }), labels[0]), b ? h('span', {}, h('i', { class: 'k2' }), labels[1]) : null),
  )
}

function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(v))
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p
  return 10 * p
}

function renderCharts(s) {
  const t = s.series.t
  chart($('chart-bus'), 'Bus messages', '/s', t, s.series.busPublished, s.series.busDelivered, ['published', 'delivered'])
  chart($('chart-jobs'), 'Jobs', '/s', t, s.series.jobs, null, ['finished (completed + failed)'])
  chart($('chart-realtime'), 'Realtime messages', '/s', t, s.series.realtimeDelivered, null, ['delivered to sessions'])
}

// ---- instances -----------------------------------------------------------------------------

function renderInstances(s) {
  const rows = s.instances.map((i) => {
    const f = i.figures
    const pending = state.busy.has(i.id)
    const confirming = state.confirm && state.confirm.id === i.id && state.confirm.until > Date.now()
    let action = null
    if (i.status === 'up') {
      action = h('button', {
        class: `btn btn-small ${confirming ? 'btn-confirm' : 'btn-warn'}`,
        type: 'button',
        disabled: pending,
        dataset: { action: 'drain', instance: i.id },
        text: pending ? 'Draining…' : confirming ? 'Confirm drain' : 'Drain',
        onclick: () => onDrain(i.id),
      })
    }
    const lag = f ? f.eventLoopP99Ms : null
    const beat = i.status === 'down' ? (i.downAt ? ago(i.downAt) : '–') : `${(i.heartbeatAgeMs / 1000).toFixed(1)}s`
    return h('tr', { dataset: { instance: i.id, status: i.status } },
      h('td', {}, h('span', { class: `pill pill-${i.status}`, text: i.status }), i.status === 'down' && i.downReason ? h('span', { class: 'sub', text: i.downReason }) : null),
      h('td', {},
        h('span', { class: 'id', text: i.id }),
        i.kind === 'eureka' ? h('span', { class: 'sub' }, h('span', { class: 'tag tag-eureka', text: 'Eureka' }), `${i.eureka.app} · ${i.eureka.status}`) : h('span', { class: 'sub', text: [i.host, i.pid ? `pid ${i.pid}` : null].filter(Boolean).join(' · ') }),
      ),
      h('td', { class: 'mono' }, link(i.url), i.inRotation ? h('span', { class: 'sub', text: 'in balancer rotation' }) : null),
      h('td', {}, i.roles.length ? i.roles.map((r) => h('span', { class: 'tag', text: r })) : h('span', { class: 'muted', text: '–' })),
      h('td', { class: 'num', text: i.epoch }),
      h('td', { class: 'num', text: i.status === 'down' ? '–' : duration(i.uptimeSec) }),
      h('td', { class: `num${i.status === 'isolated' ? ' bad' : ''}`, text: beat }),
      h('td', { class: 'num', text: f ? f.sessions : '–' }),
      h('td', { class: `num${lag !== null && lag > 200 ? ' bad' : lag !== null && lag > 50 ? ' warn' : ''}`, text: lag === null ? '–' : `${lag.toFixed(1)} ms` }),
      h('td', { class: 'num', text: f ? bytes(f.rssBytes) : '–' }),
      h('td', { class: 'num', text: f ? `${f.cpuPercent.toFixed(1)}%` : '–' }),
      h('td', { class: 'num' }, action),
    )
  })
  fill($('instances').tBodies[0], rows, 12, 'No members yet.')
  const live = s.instances.filter((i) => i.status !== 'down').length
  $('instances-note').textContent = `${live} live · updated ${clock(s.at)}`
}

async function post(path) {
  const res = await fetch(path, { method: 'POST', headers: { 'x-csrf-token': state.csrf || '' }, credentials: 'same-origin' })
  if (res.status === 401) location.assign('/login')
  const body = await res.json().catch(() => ({}))
  if (!res.ok) throw new Error(body.error ? body.error.message : `HTTP ${res.status}`)
  return body
}

async function onDrain(id) {
  if (!(state.confirm && state.confirm.id === id && state.confirm.until > Date.now())) {
    state.confirm = { id, until: Date.now() + 4000 }
    if (state.snapshot) renderInstances(state.snapshot)
    setTimeout(() => state.snapshot && renderInstances(state.snapshot), 4100)
    return
  }
  state.confirm = null
  state.busy.add(id)
  renderInstances(state.snapshot)
  try {
    await post(`/api/instances/${encodeURIComponent(id)}/drain`)
  } catch (err) {
    alert(`Could not drain ${id}: ${err.message}`)
  } finally {
    state.busy.delete(id)
    if (state.snapshot) renderInstances(state.snapshot)
  }
}

// ---- jobs, singletons, locks ---------------------------------------------------------------

function renderJobs(s) {
  const j = s.jobs || { jobs: [], failures: [], cron: [], singletons: [] }
  fill($('jobs').tBodies[0], j.jobs.map((r) => h('tr', {},
    h('td', { class: 'id', text: r.name }),
    h('td', { class: 'num', text: r.queued }),
    h('td', { class: 'num', text: r.due }),
    h('td', { class: 'num', text: r.running }),
    h('td', { class: 'num', text: r.completed }),
    h('td', { class: `num${r.failed ? ' bad' : ''}`, text: r.failed }),
    h('td', { class: 'num', text: r.cancelled }),
  )), 7, 'No jobs.')
  const total = j.jobs.reduce((n, r) => n + r.queued + r.running, 0)
  $('jobs-note').textContent = `${total} queued or running`
  const failures = j.failures.map((f) => h('li', { dataset: { job: f.id } },
    h('div', { class: 'grow' },
      h('div', {}, h('span', { class: 'id', text: f.name }), h('span', { class: 'muted small', text: `  #${f.id} · attempt ${f.attempts} · ${f.state === 'failed' ? 'failed' : 'will retry'} · ${ago(f.at)}` })),
      errorText(f.id, f.error),
    ),
    f.state === 'failed' ? h('button', { class: 'btn btn-small', type: 'button', dataset: { action: 'retry', job: f.id }, disabled: state.busy.has(`job:${f.id}`), text: 'Retry', onclick: () => onRetry(f.id) }) : null,
  ))
  $('failures').replaceChildren(...(failures.length ? failures : [h('li', { class: 'empty', text: 'No recent failures.' })]))
  fill($('cron').tBodies[0], j.cron.map((c) => h('tr', {},
    h('td', { class: 'id', text: c.name }),
    h('td', { class: 'mono', text: c.spec + (c.timezone ? ` (${c.timezone})` : '') }),
    h('td', {}, c.lastTick ? ago(c.lastTick) : '–', c.lastClaimedBy ? h('span', { class: 'sub', text: `on ${c.lastClaimedBy}` }) : null),
    h('td', { text: c.nextTick ? ago(c.nextTick) : '–' }),
  )), 4, 'No cron schedules.')
  fill($('singletons').tBodies[0], j.singletons.map((x) => h('tr', {},
    h('td', { class: 'id', text: x.name }),
    h('td', {}, x.holder ? h('span', { class: x.live ? '' : 'bad', text: x.holder + (x.live ? '' : ' (down)') }) : h('span', { class: 'warn', text: 'no holder' })),
    h('td', { class: 'num', text: x.fence }),
    h('td', { text: x.since ? ago(x.since) : '–' }),
  )), 4, 'No singletons.')
}

/** The first line of a job's error; the rest (a stack trace) folds away, and stays unfolded across redraws. */
function errorText(id, error) {
  const text = error || '(no message)'
  const nl = text.indexOf('\n')
  if (nl < 0) return h('div', { class: 'error-text', text })
  const details = h('details', { class: 'error-text', open: state.unfolded.has(id) }, h('summary', { text: text.slice(0, nl) }), h('pre', { text: text.slice(nl + 1) }))
  details.addEventListener('toggle', () => (details.open ? state.unfolded.add(id) : state.unfolded.delete(id)))
  return details
}

async function onRetry(id) {
  state.busy.add(`job:${id}`)
  try {
    await post(`/api/jobs/${encodeURIComponent(id)}/retry`)
  } catch (err) {
    alert(`Could not retry job ${id}: ${err.message}`)
  } finally {
    state.busy.delete(`job:${id}`)
  }
}

function renderLocks(s) {
  const l = s.locks || { held: 0, waiters: 0, leases: [] }
  $('locks-note').textContent = `${l.held} held · ${l.waiters} waiting`
  fill($('locks').tBodies[0], l.leases.map((x) => h('tr', {},
    h('td', { class: 'mono', text: x.name }, x.path ? h('span', { class: 'sub', text: 'path' }) : null),
    h('td', { text: x.mode }),
    h('td', {}, h('span', { class: x.live ? '' : 'bad', text: x.holder + (x.live ? '' : ' (down)') })),
    h('td', { class: 'num mono', text: x.token }),
    h('td', { text: ago(x.acquiredAt).replace(' ago', '') }),
  )), 5, 'No locks held.')
}

// ---- bus, realtime, caches -----------------------------------------------------------------

function renderBus(s) {
  const live = s.instances.filter((i) => i.figures && i.status !== 'down')
  $('bus-note').textContent = `${rate(s.bus.publishedPerSec)}/s published · ${s.bus.gaps} gaps`
  fill($('bus').tBodies[0], live.map((i) => h('tr', {},
    h('td', { class: 'id', text: i.id }),
    h('td', { class: 'num', text: rate(i.figures.busPublishedPerSec) }),
    h('td', { class: 'num', text: rate(i.figures.busDeliveredPerSec) }),
    h('td', { class: `num${i.figures.busGaps ? ' warn' : ''}`, text: i.figures.busGaps }),
  )), 4, 'No instance reports yet.')
  $('realtime-note').textContent = `${s.realtime.sessions} sessions · ${rate(s.realtime.deliveredPerSec)}/s`
  fill($('realtime').tBodies[0], live.map((i) => h('tr', {},
    h('td', { class: 'id', text: i.id }),
    h('td', { class: 'num', text: i.figures.sessions }),
    h('td', { class: 'num', text: rate(i.figures.realtimeDeliveredPerSec) }),
    h('td', { class: 'num', text: rate(i.figures.realtimePublishedPerSec) }),
  )), 4, 'No instance reports yet.')
  fill($('caches').tBodies[0], s.caches.map((c) => {
    const pct = c.hitRatio === null ? null : Math.round(c.hitRatio * 1000) / 10
    const bar = h('span', { class: 'bar' }, h('span', {}))
    bar.firstChild.style.width = `${pct ?? 0}%`
    return h('tr', {},
      h('td', { class: 'id', text: c.name }),
      h('td', { text: c.instanceId }),
      h('td', { class: 'num' }, pct === null ? '–' : `${pct}%`, bar),
      h('td', { class: 'num', text: c.size }),
    )
  }), 4, 'No near caches in use.')
}

// ---- membership events ---------------------------------------------------------------------

const KIND_TEXT = { joined: 'joined', rejoined: 'rejoined', draining: 'draining', up: 'back up', down: 'down' }

function renderEvents() {
  const list = state.events.slice(-1000).reverse()
  $('events').replaceChildren(...(list.length ? list.map((e) => h('li', { dataset: { event: e.kind, instance: e.instanceId } },
    h('time', { datetime: e.at, title: new Date(e.at).toLocaleString(), text: clock(e.at) }),
    h('span', { class: `kind kind-${e.kind}`, text: e.kind === 'down' && e.reason === 'expired' ? 'declared down' : e.kind === 'down' && e.reason === 'left' ? (e.eureka ? 'deregistered' : 'left') : KIND_TEXT[e.kind] || e.kind }),
    h('span', {}, h('span', { class: 'id', text: e.instanceId }), h('span', { class: 'muted', text: ` · epoch ${e.epoch}` }), e.eureka ? h('span', { class: 'tag tag-eureka', text: 'Eureka' }) : null),
  )) : [h('li', { class: 'muted', text: 'No membership changes recorded yet.' })]))
  $('events-note').textContent = `last ${list.length} of up to 1,000`
}

// ---- wiring --------------------------------------------------------------------------------

function render(s) {
  state.snapshot = s
  renderSummary(s)
  renderCharts(s)
  renderInstances(s)
  renderJobs(s)
  renderLocks(s)
  renderBus(s)
}

function connect() {
  const es = new EventSource('/api/stream')
  es.addEventListener('open', () => setLive('live', 'Live'))
  es.addEventListener('snapshot', (m) => {
    setLive('live', 'Live')
    render(JSON.parse(m.data))
  })
  es.addEventListener('member-events', (m) => {
    const fresh = JSON.parse(m.data)
    const last = state.events.length ? state.events[state.events.length - 1].id : 0
    state.events.push(...fresh.filter((e) => e.id > last))
    if (state.events.length > 1000) state.events.splice(0, state.events.length - 1000)
    renderEvents()
  })
  es.addEventListener('error', async () => {
    setLive('reconnecting', 'Reconnecting…')
    if (es.readyState === EventSource.CLOSED) {
      // The stream was refused: signed out (401), or too many streams. Find out which.
      const res = await fetch('/api/session', { credentials: 'same-origin' }).catch(() => null)
      if (res && res.status === 401) return location.assign('/login')
      setTimeout(connect, 3000)
    }
  })
}

async function start() {
  const res = await fetch('/api/session', { credentials: 'same-origin' })
  if (res.status === 401) return location.assign('/login')
  const session = await res.json()
  state.csrf = session.csrf
  state.token = session.token
  $('api-token').textContent = session.token
  if (session.tokenExpiresAt) $('api-token-expires').textContent = `on ${new Date(session.tokenExpiresAt).toLocaleString()}`
  $('api-button').addEventListener('click', () => { $('api-dialog').hidden = false })
  $('api-close').addEventListener('click', () => { $('api-dialog').hidden = true })
  $('api-dialog').addEventListener('click', (e) => { if (e.target === $('api-dialog')) $('api-dialog').hidden = true })
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape') $('api-dialog').hidden = true })
  renderEvents()
  connect()
  // Relative times ("12s ago") stay true between snapshots.
  setInterval(() => state.snapshot && (renderJobs(state.snapshot), renderLocks(state.snapshot)), 5000)
}

start()
