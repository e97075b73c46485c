/** `chorus status`: the members of a cluster as the database sees them, as a table or one JSON array. */
import { openSql } from '../db/connect.js'
import { locateDatabase } from './locate.js'

export interface StatusRow {
  id: string
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
  const sql = openSql(url, { schema, appName: 'chorus:cli:status', max: 1 })
  try {
    const rows = await sql<
      { instance_id: string; status: string; advertise_url: string | null; epoch: string; pid: number | null; host: string | null; roles: string[]; age_ms: number; started_at: Date }[]
    >`
      select instance_id, status, advertise_url, epoch, pid, host, roles, started_at,
             (extract(epoch from now() - heartbeat_at) * 1000)::float8 as age_ms
      from members
      where status <> 'down' or down_at > now() - interval '10 minutes'
      order by instance_id`
    return rows.map((r) => ({
      id: r.instance_id,
      status: r.status,
      url: r.advertise_url,
      epoch: Number(r.epoch),
      pid: r.pid,
      host: r.host,
      roles: r.roles,
      heartbeatAgeMs: Math.round(r.age_ms),
      startedAt: r.started_at.toISOString(),
    }))
  } finally {
    await sql.end({ timeout: 1 })
  }
}

export function formatTable(rows: StatusRow[]): string {
  if (rows.length === 0) return 'no members'
  const head = ['ID', 'STATUS', 'URL', 'EPOCH', 'PID', 'ROLES', 'HEARTBEAT']
  const body = rows.map((r) => [r.id, r.status, r.url ?? '-', String(r.epoch), String(r.pid ?? '-'), r.roles.join(',') || '-', `${(r.heartbeatAgeMs / 1000).toFixed(1)}s ago`])
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)))
  return [head, ...body].map((cols) => cols.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n')
}

export async function status(opts: { databaseUrl?: string; schema?: string; json?: boolean }): Promise<void> {
  const found = await locateDatabase(opts.databaseUrl)
  const rows = await readStatus(found.url, opts.schema ?? found.schema ?? process.env.CHORUS_SCHEMA ?? 'chorus')
  process.stdout.write((opts.json ? JSON.stringify(rows) : formatTable(rows)) + '\n')
}
