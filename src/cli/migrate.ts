/** `chorus migrate`: applies pending migrations to a cluster's schema and says what it did. */
import { openSql } from '../db/connect.js'
import { migrate } from '../db/migrate.js'
import { locateDatabase } from './locate.js'

export async function migrateCommand(opts: { databaseUrl?: string; schema?: string }): Promise<void> {
  const found = await locateDatabase(opts.databaseUrl)
  const schema = opts.schema ?? found.schema ?? process.env.CHORUS_SCHEMA ?? 'chorus'
  // Migrations need a session: the direct URL when DATABASE_URL goes through a pooler.
  const sql = openSql(process.env.CHORUS_DIRECT_URL || found.url, { appName: 'chorus:cli:migrate', max: 1 })
  try {
    const result = await migrate(sql, schema, 'chorus-cli')
    for (const m of result.applied) process.stdout.write(`applied ${String(m.version).padStart(3, '0')}_${m.name}\n`)
    process.stdout.write(`schema "${schema}" is at version ${result.version}\n`)
  } finally {
    await sql.end({ timeout: 1 })
  }
}
