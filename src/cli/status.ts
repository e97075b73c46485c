/** `chorus status`: the members of a cluster as membership reads them, as a table or one JSON array. */
import { openSql } from '../db/connect.js'
import { jobStatus, type JobStatus } from '../jobs/status.js'
import { lockStatus, type LockStatus } from '../locks/status.js'
import { readMembership } from '../membership/reader.js'
import { locateDatabase } from './locate.js'

export interface StatusRow {
  id: string
  /** `eureka`: a service registered through the dashboard's Eureka API; its URL is its home page. */
  kind: 'chorus' | 'eureka'
  status: string
  url: string | null
  epoch: number
  pid: number | null
  host: string | null
  roles: string[]
  heartbeatAgeMs: number
  startedAt: string
}

export async function readStatus(url: string, schema: string): Promise<StatusRow[]> {
  const sql = openSql(url, { appName: 'chorus:cli:status', max: 1, prepare: false })
  try {
    const members = await readMembership(sql, schema)
    return members.map((m) => ({
      id: m.instanceId,
      kind: m.kind,
      status: m.status,
      url: m.advertiseUrl ?? eurekaHomePage(m.metadata),
      epoch: m.epoch,
      pid: m.pid,
      host: m.host,
      roles: [...m.roles],
      heartbeatAgeMs: m.heartbeatAgeMs,
      startedAt: m.startedAt.toISOString(),
    }))
  } finally {
    await sql.end({ timeout: 1 })
  }
}

/** A Eureka registration has no advertise URL; its home page stands in for one. */
function eurekaHomePage(metadata: Readonly<Record<string, unknown>>): string | null {
  const home = (metadata.eureka as { homePageUrl?: unknown } | undefined)?.homePageUrl
  return typeof home === 'string' ? home : null
}

export function formatTable(rows: StatusRow[]): string {
  if (rows.length === 0) return 'no members'
  const head = ['ID', 'STATUS', 'URL', 'EPOCH', 'PID', 'ROLES', 'HEARTBEAT']
  const body = rows.map((r) => [r.id, r.status, r.url ?? '-', String(r.epoch), String(r.pid ?? '-'), r.roles.join(',') || '-', `${(r.heartbeatAgeMs / 1000).toFixed(1)}s ago`])
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)))
  return [head, ...body].map((cols) => cols.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n')
}

/** Locks, singletons, jobs by state and cron schedules: the coordination state of the cluster. */
export async function readCoordination(url: string, schema: string): Promise<{ locks: LockStatus; jobs: JobStatus }> {
  const sql = openSql(url, { appName: 'chorus:cli:status', max: 2, prepare: false })
  try {
    const [locks, jobs] = await Promise.all([lockStatus(sql as never, { schema, limit: 20 }), jobStatus(sql, { schema })])
    return { locks, jobs }
  } finally {
    await sql.end({ timeout: 1 })
  }
}

export function formatCoordination({ locks, jobs }: { locks: LockStatus; jobs: JobStatus }): string {
  const out: string[] = []
  out.push(`LOCKS       ${locks.held} held (${locks.exclusive} exclusive, ${locks.shared} shared), ${locks.waiters} waiting`)
  for (const s of jobs.singletons) out.push(`SINGLETON   ${s.name} → ${s.holder && s.live ? `${s.holder} (epoch ${s.epoch})` : 'nobody'}`)
  if (jobs.jobs.length > 0) {
    const head = ['JOB', 'QUEUED', 'DUE', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED']
    const body = jobs.jobs.map((j) => [j.name, j.queued, j.due, j.running, j.completed, j.failed, j.cancelled].map(String))
    const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)))
    out.push('')
    for (const cols of [head, ...body]) out.push(cols.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd())
  }
  for (const c of jobs.cron) {
    const last = c.lastTick ? new Date(c.lastTick).toISOString() : 'never'
    const next = c.nextTick ? new Date(c.nextTick).toISOString() : '-'
    out.push(`CRON        ${c.name} "${c.spec}" last ${last} next ${next}`)
  }
  return out.join('\n')
}

export async function status(opts: { databaseUrl?: string; schema?: string; json?: boolean; details?: boolean }): Promise<void> {
  const found = await locateDatabase(opts.databaseUrl)
  const schema = opts.schema ?? found.schema ?? process.env.CHORUS_SCHEMA ?? 'chorus'
  const rows = await readStatus(found.url, schema)
  if (opts.json && !opts.details) {
    process.stdout.write(JSON.stringify(rows) + '\n')
    return
  }
  const coordination = await readCoordination(found.url, schema)
  if (opts.json) process.stdout.write(JSON.stringify({ members: rows, ...coordination }) + '\n')
  else process.stdout.write(`${formatTable(rows)}\n\n${formatCoordination(coordination)}\n`)
}
