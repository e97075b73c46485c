/**
 * What `chorus up` checks before it starts anything, so that a mistake ends in one line and leaves
 * nothing behind: which file `--app` runs (a file, or a directory's package.json `main`, its `start`
 * script's node entry, or index.js/index.mjs), and that every port it will listen on is free.
 */
import { existsSync, readFileSync, statSync } from 'node:fs'
import { createServer } from 'node:net'
import { resolve } from 'node:path'
import { ChorusError } from '../errors.js'

/** The file `chorus up --app <path>` runs: `path` itself, or what a directory names (see the module comment). */
export function resolveApp(path: string): string {
  const app = resolve(path)
  if (!existsSync(app)) throw new ChorusError('CHORUS_ERR_CLI_APP_NOT_FOUND', [app])
  if (!statSync(app).isDirectory()) return app
  const pkg = readPackage(app)
  const candidates = [
    typeof pkg?.main === 'string' ? pkg.main : undefined,
    typeof pkg?.scripts?.start === 'string' ? startEntry(pkg.scripts.start) : undefined,
    'index.js',
    'index.mjs',
  ]
  for (const candidate of candidates) {
    if (!candidate) continue
    for (const file of [candidate, `${candidate}.js`, `${candidate}.mjs`, `${candidate}/index.js`]) {
      const full = resolve(app, file)
      if (existsSync(full) && statSync(full).isFile()) return full
    }
  }
  throw new ChorusError('CHORUS_ERR_CLI_APP_NOT_RUNNABLE', [app])
}

function readPackage(dir: string): { main?: unknown; scripts?: { start?: unknown } } | null {
  try {
    return JSON.parse(readFileSync(resolve(dir, 'package.json'), 'utf8')) as { main?: unknown; scripts?: { start?: unknown } }
  } catch {
    return null
  }
}

/** Node options that take their value as the next word. */
const withValue = new Set(['-r', '--require', '--import', '--loader', '--experimental-loader', '--env-file', '--conditions', '-C', '--title'])

/** The entry file of a `start` script that runs `node [options] <file> …`, else undefined. */
export function startEntry(script: string): string | undefined {
  const words = script.trim().split(/\s+/)
  // Leading VAR=value assignments, then node itself.
  while (words.length && /^[A-Za-z_][A-Za-z0-9_]*=/.test(words[0]!)) words.shift()
  if (!words.length || !/(^|\/)node$/.test(words.shift()!)) return undefined
  while (words.length) {
    const word = words.shift()!
    if (withValue.has(word)) words.shift()
    else if (!word.startsWith('-')) return word.replace(/^["']|["']$/g, '')
  }
  return undefined
}

/** A port `chorus up` will listen on: what it is for, and how to choose another. */
export interface PortNeed {
  port: number
  what: string
  change: string
}

/** Throws `CHORUS_ERR_CLI_PORT_IN_USE` for the first port that is taken, or asked for twice. */
export async function assertPortsFree(needs: readonly PortNeed[]): Promise<void> {
  const seen = new Map<number, PortNeed>()
  for (const need of needs) {
    const other = seen.get(need.port)
    if (other) throw new ChorusError('CHORUS_ERR_CLI_PORT_IN_USE', [need.port, `${need.what}, and ${other.what}`, need.change], { details: { port: need.port } })
    seen.set(need.port, need)
  }
  for (const need of needs) {
    if (!(await portFree(need.port))) throw new ChorusError('CHORUS_ERR_CLI_PORT_IN_USE', [need.port, need.what, need.change], { details: { port: need.port } })
  }
}

/** Whether `port` can be listened on at 127.0.0.1 now; `port` 0 asks for any free port, whose number is returned. */
export function portFree(port: number): Promise<number | false> {
  return new Promise((done, fail) => {
    const server = createServer()
    server.unref()
    server.once('error', (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' ? done(false) : fail(err)))
    server.listen(port, '127.0.0.1', () => {
      const actual = (server.address() as { port: number }).port
      server.close(() => done(actual))
    })
  })
}
