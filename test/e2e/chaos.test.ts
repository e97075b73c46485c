// The chaos suite as a test: 60 s of kill -9 of instances and PostgreSQL restarts under load on every
// subsystem (scripts/chaos), then every check of the recorded history must pass. The run owns its
// PostgreSQL (it restarts it), so it does not use the suite's shared one.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const script = fileURLToPath(new URL('../../scripts/chaos/run.mjs', import.meta.url))

interface Check {
  name: string
  passed: boolean
  detail: string
}

function runChaos(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString()
      if (process.env.CHORUS_TEST_VERBOSE) process.stderr.write(c)
    })
    child.once('error', reject)
    child.once('exit', (code) => resolve({ code, stdout, stderr }))
  })
}

describe('chaos: kill -9 and PostgreSQL restarts under load', () => {
  it('keeps every promise of the recorded history through 60 s of chaos', { timeout: 600_000 }, async () => {
    const { code, stdout, stderr } = await runChaos(['--seconds', '60', '--json'])
    const line = stdout.trim().split('\n').pop() ?? ''
    let summary: { passed: boolean; seed: number; checks: Check[] }
    try {
      summary = JSON.parse(line)
    } catch {
      throw new Error(`the chaos run printed no summary (exit ${code}); its output:\n${stderr.slice(-8000)}`)
    }
    // The human-readable summary (tables, recovery times, the seed to replay) goes to the log.
    process.stdout.write(stderr.slice(stderr.indexOf('\nchaos: seed') + 1))
    const failed = summary.checks.filter((c) => !c.passed).map((c) => `${c.name}: ${c.detail}`)
    expect(failed, `seed ${summary.seed}`).toEqual([])
    expect(summary.checks.length).toBeGreaterThanOrEqual(11)
    expect(summary.passed).toBe(true)
    expect(code).toBe(0)
  })
})
