// The Config panel: the shared configuration of the view chosen (app and profiles) with each
// key's source, which version each instance runs, and the history with its differences and a
// rollback button, and a form that sets one key (the runtime layer, as `chorus config set`). It adds its own card to the page (after the Instances card) and reads
// /api/config every 5 s; values arrive masked from the server and go in through textContent only.
'use strict'

;(() => {
  const cfg = { csrf: null, view: { app: '', profile: '' }, busy: false }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag)
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue
      if (k === 'class') node.className = v
      else if (k === 'text') node.textContent = v
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v)
      else node.setAttribute(k, v === true ? '' : String(v))
    }
    for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) node.append(c instanceof Node ? c : document.createTextNode(String(c)))
    return node
  }

  const show = (v) => (v === undefined ? '(none)' : typeof v === 'string' ? v : JSON.stringify(v))
  const table = (head, rows, empty) =>
    el('div', { class: 'table-wrap' }, el('table', { class: 'table' }, el('thead', {}, el('tr', {}, head.map((t) => el('th', { text: t })))), el('tbody', {}, rows.length ? rows : el('tr', { class: 'empty' }, el('td', { colspan: head.length, text: empty })))))

  const note = el('span', { class: 'muted small' })
  const viewSelect = el('select', { 'aria-label': 'App and profiles', onchange: () => { const [app, profile] = viewSelect.value.split('|'); cfg.view = { app, profile }; void load() } })
  const values = el('div')
  const running = el('div')
  const past = el('div')
  const outcome = el('span', { class: 'small', role: 'status', 'data-config-outcome': true })
  const keyInput = el('input', { type: 'text', name: 'key', required: true, placeholder: 'quiz.uploadsEnabled', 'aria-label': 'Key', class: 'mono', maxlength: 200 })
  const valueInput = el('input', { type: 'text', name: 'value', required: true, placeholder: 'false', 'aria-label': 'Value (JSON, else text)', class: 'mono', autocomplete: 'off' })
  const secretBox = el('input', { type: 'checkbox', name: 'secret', 'aria-label': 'Secret' })
  const editForm = el('form', { class: 'config-set', 'aria-label': 'Set a key', onsubmit: (ev) => { ev.preventDefault(); void setKey() } },
    keyInput, ' = ', valueInput, ' ', el('label', { class: 'small muted' }, secretBox, ' secret'), ' ', el('button', { class: 'btn btn-small', type: 'submit', text: 'Set' }), ' ', outcome)
  const card = el(
    'section',
    { class: 'card', 'aria-labelledby': 'config-title', id: 'config-card' },
    el('div', { class: 'card-head' }, el('h2', { id: 'config-title', text: 'Configuration' }), note),
    el('p', {}, viewSelect),
    values,
    editForm,
    el('h3', { class: 'small muted', text: 'Instances' }),
    running,
    el('h3', { class: 'small muted', text: 'History' }),
    past,
  )

  function mount() {
    const anchor = document.querySelector('[aria-labelledby="instances-title"]')
    if (anchor) anchor.after(card)
    else document.querySelector('main')?.append(card)
  }

  async function json(path, init) {
    const res = await fetch(path, { credentials: 'same-origin', ...init })
    const body = await res.json().catch(() => null)
    if (!res.ok) throw new Error(body?.error?.message || `HTTP ${res.status}`)
    return body
  }

  function drawViews(views) {
    const current = `${cfg.view.app}|${cfg.view.profile}`
    const options = [{ app: '', profiles: [] }, ...views].map((v) => {
      const value = `${v.app || ''}|${v.profiles.join(',')}`
      return el('option', { value, selected: value === current, text: `${v.app || 'application'}${v.profiles.length ? ` [${v.profiles.join(', ')}]` : ''}` })
    })
    const unique = new Map(options.map((o) => [o.value, o]))
    viewSelect.replaceChildren(...unique.values())
  }

  async function rollback(version, current) {
    if (cfg.busy || !window.confirm(`Store a new version equal to version ${version}? Every instance runs it within a second.`)) return
    cfg.busy = true
    try {
      const r = await json('/api/config/rollback', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-csrf-token': cfg.csrf || '' },
        body: JSON.stringify({ version, expectedVersion: current }),
      })
      outcome.textContent = r.stored ? `rolled back: version ${r.version}` : 'nothing to change'
    } catch (err) {
      outcome.textContent = `rollback refused: ${err.message}`
    } finally {
      cfg.busy = false
      void load()
    }
  }

  /** Sets one key; the value is read as JSON (`false`, `60`, `["a"]`), else as text. */
  async function setKey() {
    if (cfg.busy) return
    cfg.busy = true
    let value = valueInput.value
    try {
      value = JSON.parse(value)
    } catch {}
    try {
      const r = await json('/api/config/set', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-csrf-token': cfg.csrf || '' },
        body: JSON.stringify({ key: keyInput.value.trim(), value, secret: secretBox.checked, expectedVersion: cfg.version }),
      })
      outcome.textContent = r.stored ? `set: version ${r.version}` : 'nothing to change'
      if (r.stored) valueInput.value = ''
    } catch (err) {
      outcome.textContent = `set refused: ${err.message}`
    } finally {
      cfg.busy = false
      void load()
    }
  }

  async function load() {
    try {
      if (!cfg.csrf) cfg.csrf = (await json('/api/session')).csrf
      const q = new URLSearchParams({ app: cfg.view.app, profile: cfg.view.profile })
      const [now, hist] = await Promise.all([json(`/api/config?${q}`), json('/api/config/history?limit=20')])
      cfg.version = now.version
      note.textContent = `version ${now.version}`
      drawViews(now.views)
      values.replaceChildren(table(['Key', 'Value', 'Source'], now.entries.map((e) => el('tr', {}, el('td', { class: 'mono', text: e.key }), el('td', { class: 'mono', text: show(e.value) }), el('td', { class: 'muted', text: e.source }))), 'no configuration'))
      running.replaceChildren(
        table(['Instance', 'App', 'Profiles', 'Version', ''], now.instances.map((i) => el('tr', {}, el('td', { text: i.instanceId }), el('td', { text: i.view.app || 'application' }), el('td', { text: i.view.profiles.join(', ') || '–' }), el('td', { class: 'num', text: String(i.version) }), el('td', { class: i.current ? 'muted small' : 'small', text: i.refused ? `refused ${i.refused}` : i.current ? 'current' : 'behind' }))), 'no instance reports a version'),
      )
      past.replaceChildren(
        table(['Version', 'When', 'Who', 'What changed', ''], hist.versions.map((v) =>
          el('tr', {},
            el('td', { class: 'num', text: String(v.version) }),
            el('td', { class: 'muted small', text: new Date(v.createdAt).toLocaleString() }),
            el('td', { text: `${v.author} (${v.source})` }),
            el('td', { class: 'mono small' }, v.differences.map((d) => el('div', { text: `${d.source} ${d.key}: ${show(d.before)} → ${show(d.after)}` }))),
            el('td', {}, v.version === now.version ? null : el('button', { class: 'btn btn-small btn-warn', type: 'button', text: 'Roll back', onclick: () => void rollback(v.version, now.version) })),
          )), 'no versions'),
      )
    } catch (err) {
      note.textContent = `could not load: ${err.message}`
    }
  }

  const start = () => {
    mount()
    void load()
    setInterval(() => void load(), 5000)
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start)
  else start()
})()
