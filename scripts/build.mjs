// Builds the package: TypeScript and the files it needs at run time (SQL migrations, dashboard
// assets) into a fresh directory, then swaps it in for dist/ with renames, so processes running
// from dist/ never see it half-built.
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { patch as patchPostgres } from './patch-postgres.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
// The PostgreSQL driver runs patched (see scripts/patch-postgres.mjs); idempotent.
patchPostgres()
const require = createRequire(import.meta.url)
const tsc = require.resolve('typescript/bin/tsc')
const out = join(root, `.dist-build-${process.pid}`)
const dist = join(root, 'dist')
const old = join(root, `.dist-old-${process.pid}`)

rmSync(out, { recursive: true, force: true })
// Type errors fail the build (exit code) but the emitted code is still swapped in.
let failed = false
try {
  try {
    execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.json'), '--outDir', out], { stdio: 'inherit', cwd: root })
  } catch {
    failed = true
  }
  mkdirSync(join(out, 'db/migrations'), { recursive: true })
  cpSync(join(root, 'src/db/migrations'), join(out, 'db/migrations'), { recursive: true })
  if (existsSync(join(root, 'src/dashboard/ui'))) cpSync(join(root, 'src/dashboard/ui'), join(out, 'dashboard/ui'), { recursive: true })
  if (existsSync(dist)) renameSync(dist, old)
  renameSync(out, dist)
} finally {
  rmSync(out, { recursive: true, force: true })
  rmSync(old, { recursive: true, force: true })
}
if (failed) {
  process.stderr.write('build: TypeScript reported errors\n')
  process.exit(1)
}
