// The chaos run's summary: the checks, the recovery after each PostgreSQL restart, and what each
// subsystem did — as plain-text tables, or as one JSON object for machines (`--json`).
import { table } from '../../bench/lib/harness.mjs'
import { SUBSYSTEMS } from './checks.mjs'

const ms = (v) => (v === null || v === undefined ? '–' : `${Math.round(v)}`)

export function renderText(summary) {
  const out = []
  out.push(
    `chaos: seed ${summary.seed}, ${summary.seconds} s, ${summary.instances} instances; ${summary.kills} instances killed (${summary.doubleKills} times two at once), PostgreSQL restarted ${summary.restarts.length} times (${summary.restarts.filter((r) => r.crash).length} after a crash)`,
  )
  out.push(summary.machine)
  out.push('')
  out.push(table(['check', 'result', 'detail'], summary.checks.map((c) => [c.name, c.passed ? 'pass' : 'FAIL', c.detail])))
  out.push('')
  out.push('recovery after each PostgreSQL restart: ms from "accepts connections" to the first success in the cluster (slowest instance)')
  const headers = ['subsystem', ...summary.recovery.map((r) => `#${r.restart} ${r.crash ? 'crash' : 'stop'}, down ${(r.downMs / 1000).toFixed(1)} s`)]
  const rows = SUBSYSTEMS.map((sub) => [
    sub,
    ...summary.recovery.map((r) => {
      const x = r.subsystems[sub]
      return x ? `${ms(x.firstMs)}${x.slowestMs === null ? '' : ` (${ms(x.slowestMs)})`}` : '–'
    }),
  ])
  out.push(table(headers, rows))
  out.push('')
  out.push(table(['subsystem', 'successes', 'errors'], SUBSYSTEMS.map((sub) => [sub, String(summary.counts[sub] ?? 0), String(summary.errors[sub] ?? 0)])))
  out.push('')
  out.push(summary.passed ? 'every check passed' : `FAILED: ${summary.checks.filter((c) => !c.passed).map((c) => c.name).join('; ')}`)
  out.push(`replay with: npm run chaos -- --seconds ${summary.seconds} --seed ${summary.seed}${summary.crash ? ' --crash' : ''}`)
  if (summary.kept) out.push(`journals, logs and database kept in ${summary.dir}`)
  return out.join('\n') + '\n'
}
