// Every documented snippet type-checks as a user writes it: test/types/ holds the snippets of the
// README, docs/guide.md and docs/state.md as .ts/.cts files that import 'chorus' by its package
// name (resolved through package.json "exports" to the built declarations, as an installed
// package would be), compiled by tsc under a strict NodeNext tsconfig.
import { execFileSync, spawnSync } from 'node:child_process'
import { readdirSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const root = fileURLToPath(new URL('../..', import.meta.url))
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')

function newest(dir: string): number {
  let t = 0
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    t = Math.max(t, e.isDirectory() ? newest(p) : e.name.endsWith('.ts') ? statSync(p).mtimeMs : 0)
  }
  return t
}

/** The declarations must be those of the current sources: rebuild dist/ when a source is newer. */
function ensureBuilt(): void {
  let built = 0
  try {
    built = statSync(join(root, 'dist/index.d.ts')).mtimeMs
  } catch { /* not built yet */ }
  if (built >= newest(join(root, 'src'))) return
  try {
    execFileSync(process.execPath, [join(root, 'scripts/build.mjs')], { cwd: root, stdio: 'ignore' })
  } catch { /* type errors elsewhere still emit; the snippets' own diagnostics are what this test reads */ }
}

describe('documented snippets', () => {
  it('type-check under strict NodeNext, ESM and CommonJS consumers alike', () => {
    ensureBuilt()
    const fixtures = readdirSync(join(root, 'test/types')).filter((f) => /\.(c|m)?ts$/.test(f))
    expect(fixtures).toEqual(expect.arrayContaining(['sessions.express.ts', 'sessions.fastify.ts']))
    const run = spawnSync(process.execPath, [tsc, '-p', join(root, 'test/types/tsconfig.json'), '--pretty', 'false'], { cwd: root, encoding: 'utf8' })
    const diagnostics = (run.stdout + run.stderr).split('\n').filter((l) => /error TS\d+/.test(l))
    expect(diagnostics).toEqual([])
    expect(run.status).toBe(0)
  }, 240_000)
})
