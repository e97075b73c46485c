// The public API as built (dist/index.d.ts, @internal members stripped) must match the checked-in
// report etc/chorus.api.md, so a change to the public surface shows in review: after an intended
// change, `npm run api:report` rewrites the report.
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const root = join(dirname(fileURLToPath(import.meta.url)), '../..')
const extractor = join(dirname(createRequire(import.meta.url).resolve('@microsoft/api-extractor/package.json')), 'bin/api-extractor')

describe('the public API report', () => {
  it('matches the built declarations', () => {
    expect(existsSync(join(root, 'dist/index.d.ts')), 'dist/ is built (npm test builds it first)').toBe(true)
    const run = spawnSync(process.execPath, [extractor, 'run'], { cwd: root, encoding: 'utf8', timeout: 120_000 })
    const out = `${run.stdout}\n${run.stderr}`
    expect(out, out).toContain('API Extractor completed successfully')
    expect(run.status).toBe(0)
  }, 150_000)

  it('ships no @internal member and no private field in the report', () => {
    const report = readFileSync(join(root, 'etc/chorus.api.md'), 'utf8')
    expect(report).not.toMatch(/@internal/)
    expect(report).not.toMatch(/\bsetState\b|\baddSubsystem\b|\bget deps\b/)
  })
})
