/**
 * Runs one process for `chorus up`: `runner <entry> [args…]` imports the entry with `process.argv`
 * set as if it had been started as `node <entry> [args…]`, and calls its default export when that
 * is a function — so a plain script, a module exporting `async function main()` and the `chorus`
 * command itself (balancer, dashboard) all run the same way.
 *
 * Never outlives `chorus up`: its stdin is a pipe from `chorus up`, which nothing writes to; when it
 * closes (`chorus up` is gone, however it ended) the process is sent SIGTERM, so the app closes
 * gracefully, and it exits after GRACE_MS if it has not by then.
 */
import { pathToFileURL } from 'node:url'

const GRACE_MS = 30_000

const entry = process.argv[2]
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

process.argv = [process.argv[0]!, entry, ...process.argv.slice(3)]
const mod = (await import(pathToFileURL(entry).href)) as { default?: unknown }
if (typeof mod.default === 'function') await (mod.default as () => unknown)()
