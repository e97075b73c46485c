/**
 * Runs one process for `chorus up`: `runner <entry> [args…]` imports the entry with `process.argv`
 * set as if it had been started as `node <entry> [args…]`, and calls its default export when that
 * is a function — so a plain script, a module exporting `async function main()` and the `chorus`
 * command itself (balancer, dashboard) all run the same way.
 *
 * `runner --standby` is a warm spare that `chorus up` keeps for restarts (supervisor.ts, Spare).
 *
 * Never outlives `chorus up`: its stdin is a pipe from `chorus up`, which nothing writes to; when it
 * closes (`chorus up` is gone, however it ended) the process is sent SIGTERM, so the app closes
 * gracefully, and it exits after GRACE_MS if it has not by then.
 */
import { pathToFileURL } from 'node:url'

const GRACE_MS = 30_000
const STANDBY = '--standby'
/** The longest first line a spare accepts. */
const MAX_GO_BYTES = 1024 * 1024

let args = process.argv.slice(2)
if (args[0] === STANDBY) {
  // A warm spare for restarts: the Chorus library is imported before the process is needed, so an
  // app that imports it starts from a warm module cache. It becomes an instance when its first
  // stdin line, {"args": [entry, …], "env": {…}}, arrives; it exits when stdin ends first.
  await import('../index.js')
  // What ps shows while it waits.
  process.title = 'chorus spare (warm)'
  const go = await firstLine()
  if (go === null) process.exit(0)
  const given = JSON.parse(go) as { args: string[]; env: Record<string, string> }
  for (const name of Object.keys(process.env)) if (!(name in given.env)) delete process.env[name]
  Object.assign(process.env, given.env)
  args = given.args
  process.title = `node ${args.join(' ')}`
}

const [entry, ...rest] = args
if (!entry) {
  process.stderr.write('usage: runner <entry> [args…]\n')
  process.exit(2)
}

if (!process.stdin.isTTY) {
  process.stdin.on('end', () => {
    setTimeout(() => process.exit(1), GRACE_MS).unref()
    process.kill(process.pid, 'SIGTERM')
  })
  process.stdin.resume()
  // Watching stdin must not keep a finished app alive.
  ;(process.stdin as unknown as { unref?: () => void }).unref?.()
}

process.argv = [process.argv[0]!, entry, ...rest]
const mod = (await import(pathToFileURL(entry).href)) as { default?: unknown }
if (typeof mod.default === 'function') await (mod.default as () => unknown)()

/** The first line of stdin, or null when it ends before one. */
function firstLine(): Promise<string | null> {
  return new Promise((resolve) => {
    let buffered = ''
    const onData = (chunk: Buffer) => {
      buffered += chunk.toString('utf8')
      const end = buffered.indexOf('\n')
      if (end < 0 && buffered.length <= MAX_GO_BYTES) return
      process.stdin.off('data', onData)
      process.stdin.off('end', onEnd)
      process.stdin.pause()
      resolve(end < 0 ? null : buffered.slice(0, end))
    }
    const onEnd = () => resolve(null)
    process.stdin.on('data', onData)
    process.stdin.once('end', onEnd)
  })
}
