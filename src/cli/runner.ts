/**
 * Runs an app for `chorus up`: imports the module; when it exports a default function, calls it.
 * So both a plain script and a module exporting `async function main()` work as `--app`.
 */
import { pathToFileURL } from 'node:url'

const app = process.argv[2]
if (!app) {
  process.stderr.write('usage: runner <app>\n')
  process.exit(2)
}
const mod = (await import(pathToFileURL(app).href)) as { default?: unknown }
if (typeof mod.default === 'function') await (mod.default as () => unknown)()
