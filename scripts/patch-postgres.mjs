// Patches the PostgreSQL driver (postgres.js 3.4.9, pinned) against defects that crash or corrupt
// an instance when a backend dies; upstream has the reports (porsager/postgres#1154, #1155, #1189,
// #1208) but no release with the fixes. Applied by scripts/build.mjs (so by `npm install` through
// `prepare`, and by `npm test`); the package ships the patched copy as a bundled dependency.
// `--check` exits 1 when the installed driver is not patched; `--revert` restores the original.
//
// The defects, each fixed below in both the ESM and the CommonJS copy:
// 1. A query written after its connection closed (a transaction's own ROLLBACK/COMMIT, or a query
//    of a reserved connection) wrote to a null socket from a setImmediate: an uncaught TypeError.
// 2. After a close with a write pending, the stale write timer was never cleared, so the next
//    connection's startup message was never flushed (the reconnect hung until connect_timeout).
// 3. A transaction's queries issued after its connection closed ran on the reconnected connection,
//    outside the transaction; so did a reserved connection's, and releasing it reopened it.
// 4. At the pipeline limit, BEGIN was written without the connection being reserved for it.
// 5. A backend's FATAL error that arrived just before its socket closed stayed pending, and failed
//    the first query of the next connection (an unhandled rejection when that was the driver's own).
// 6. With a multi-host URL whose hosts all refused, a query retried forever instead of failing: the
//    count of hosts tried never grew.
// 7. A query sent after a socket error (ECONNRESET) but before the socket's close was never settled:
//    the close failed held queries only when it came without an error. A caller that retries at
//    once on failure (the bus publisher) then waited forever.
// 8. The queries a new connection sends by itself (array types, and the read-only state for
//    target_session_attrs) dropped their promises: a backend dying during them was an unhandled
//    rejection, which ends a Node process (porsager/postgres#1192).
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const MARKER = '/* chorus-patch-4 */'
const VERSION = '3.4.9'

const connectionEdits = [
  // 1: never write to a connection that has closed; the query fails like any other on a closed connection.
  [
    `    if (q.cancelled)
      return

    try {
      q.state = backend`,
    `    if (q.cancelled)
      return

    if (socket === null) ${MARKER}
      return queryError(q, Errors.connection('CONNECTION_CLOSED', options)), true

    try {
      q.state = backend`,
  ],
  // 4: the reservation hook runs whenever the query was written, not only below the pipeline limit.
  [
    `      build(q)
      return write(toBuffer(q))
        && !q.describeFirst
        && !q.cursorFn
        && sent.length < max_pipeline
        && (!q.options.onexecute || q.options.onexecute(connection))`,
    `      build(q)
      const ready = write(toBuffer(q))
        && !q.describeFirst
        && !q.cursorFn
        && sent.length < max_pipeline
      return q.options.onexecute ? (q.options.onexecute(connection), false) : ready`,
  ],
  // 1: a write scheduled before the close finds no socket: drop it.
  [
    `  function nextWrite(fn) {
    const x = socket.write(chunk, fn)`,
    `  function nextWrite(fn) {
    if (socket === null)
      return (nextWriteTimer !== null && clearImmediate(nextWriteTimer), chunk = nextWriteTimer = null, true)
    const x = socket.write(chunk, fn)`,
  ],
  // 5: a new connection starts with no query, result or error left from the one that closed.
  [
    `  function connected() {
    try {
      statements = {}`,
    `  function connected() {
    try {
      query = results = errorResponse = null
      result = new Result()
      statements = {}`,
  ],
  // 6: with several hosts, each failed connect moves on to the next host; once every host of the
  // round failed, the error reaches the query (and the next query starts a new round).
  [
    `  function error(err) {
    if (connection.queue === queues.connecting && options.host[retries + 1])
      return

    errored(err)`,
    `  function error(err) {
    if (connection.queue === queues.connecting && options.host[retries + 1])
      return void retries++

    retries = 0
    errored(err)`,
  ],
  // 8: the connection's own start-up queries: a failure means the connection died, and its close
  // reconnects or fails the waiting query; nothing is left to reject.
  [
    `      if (needsTypes) {
        initial.reserve && (initial = null)
        return fetchArrayTypes()`,
    `      if (needsTypes) {
        initial.reserve && (initial = null)
        return fetchArrayTypes().catch(() => undefined) ${MARKER}`,
  ],
  [
    `    query.execute()
  }

  function ErrorResponse(x) {`,
    `    query.execute().catch(() => undefined)
  }

  function ErrorResponse(x) {`,
  ],
  // 2: forget the pending write and its timer when the socket goes (terminate and close).
  [
    `    clearImmediate(nextWriteTimer)
    if (socket) {`,
    `    clearImmediate(nextWriteTimer)
    chunk = nextWriteTimer = null
    if (socket) {`,
  ],
  // 7: a connection that closes fails every query it still holds, whether or not an error came first
  // (a query the error already failed is rejected again, which does nothing). An `if` statement: a
  // line starting with `(` after `if (initial) return reconnect()` would continue that statement.
  [
    `    !hadError && (query || sent.length) && error(Errors.connection('CONNECTION_CLOSED', options, socket))`,
    `    if (query || sent.length) ${MARKER}
      error(Errors.connection('CONNECTION_CLOSED', options, socket))`,
  ],
  [
    `    incomings = null
    clearImmediate(nextWriteTimer)
    socket.removeListener('data', data)`,
    `    incomings = null
    clearImmediate(nextWriteTimer)
    chunk = nextWriteTimer = null
    socket.removeListener('data', data)`,
  ],
]

const indexEdits = [
  // 3: a reserved connection that closed refuses further queries, and is not reopened by release().
  [
    `    move(c, reserved)
    c.reserved = () => queue.length
      ? c.execute(queue.shift())
      : move(c, reserved)
    c.reserved.release = true

    const sql = Sql(handler)
    sql.release = () => {
      c.reserved = null
      onopen(c)
    }

    return sql

    function handler(q) {
      c.queue === full`,
    `    move(c, reserved)
    c.reserved = () => queue.length
      ? c.execute(queue.shift())
      : move(c, reserved)
    c.reserved.release = true
    let lost = false ${MARKER}
    c.onclose = () => {
      lost = true
      while (queue.length) queue.shift().reject(Errors.connection('CONNECTION_CLOSED', options))
    }

    const sql = Sql(handler)
    sql.release = () => {
      if (lost) return
      c.onclose = null
      c.reserved = null
      onopen(c)
    }

    return sql

    function handler(q) {
      if (lost)
        return q.reject(Errors.connection('CONNECTION_CLOSED', options))
      c.queue === full`,
  ],
  // 3: a transaction whose connection closed refuses its remaining queries (ROLLBACK/COMMIT included).
  [
    `    let savepoints = 0
      , connection
      , prepare = null`,
    `    let savepoints = 0
      , connection
      , prepare = null
      , lost = false ${MARKER}`,
  ],
  [
    `        new Promise((_, reject) => connection.onclose = reject)`,
    `        new Promise((_, reject) => connection.onclose = (e) => (lost = true, reject(e)))`,
  ],
  [
    `      function handler(q) {
        q.catch(e => uncaughtError || (uncaughtError = e))
        c.queue === full`,
    `      function handler(q) {
        q.catch(e => uncaughtError || (uncaughtError = e))
        if (lost)
          return q.reject(Errors.connection('CONNECTION_CLOSED', options))
        c.queue === full`,
  ],
]

function driverDir() {
  const require = createRequire(import.meta.url)
  // The package's main is cjs/src/index.js.
  return join(dirname(require.resolve('postgres')), '..', '..')
}

function files(dir) {
  return [
    [join(dir, 'src/connection.js'), connectionEdits],
    [join(dir, 'src/index.js'), indexEdits],
    [join(dir, 'cjs/src/connection.js'), connectionEdits],
    [join(dir, 'cjs/src/index.js'), indexEdits],
  ]
}

export function isPatched(dir = driverDir()) {
  return files(dir).every(([file]) => existsSync(file) && readFileSync(file, 'utf8').includes(MARKER))
}

export function patch(dir = driverDir()) {
  const version = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).version
  if (version !== VERSION) throw new Error(`patch-postgres: expected postgres ${VERSION}, found ${version}; review the patch before moving the pin`)
  for (const [file, edits] of files(dir)) {
    let text = readFileSync(file, 'utf8')
    if (text.includes(MARKER)) continue
    for (const [from, to] of edits) {
      if (text.split(from).length !== 2) throw new Error(`patch-postgres: ${file} does not contain the expected code once:\n${from}`)
      text = text.replace(from, () => to)
    }
    writeFileSync(file, text)
  }
}

export function revert(dir = driverDir()) {
  for (const [file, edits] of files(dir)) {
    let text = readFileSync(file, 'utf8')
    if (!text.includes(MARKER)) continue
    for (const [from, to] of [...edits].reverse()) text = text.replace(to, () => from)
    writeFileSync(file, text)
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const arg = process.argv[2]
  if (arg === '--check') process.exit(isPatched() ? 0 : 1)
  else if (arg === '--revert') revert()
  else patch()
}
