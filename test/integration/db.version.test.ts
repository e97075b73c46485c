// The server under test is the PostgreSQL major the run asked for (CHORUS_TEST_PG_MAJOR), so the
// version matrix cannot pass on a silent fallback to the default binaries; without a request, it
// is at least the oldest supported major.
import postgres from 'postgres'
import { expect, inject, it } from 'vitest'
import { serverUrl } from '../helpers/db.js'

it('runs on the requested PostgreSQL major, and never below 13', async () => {
  const sql = postgres(serverUrl(), { max: 1, onnotice: () => undefined })
  try {
    const [row] = await sql.unsafe<{ server_version_num: string }[]>('show server_version_num')
    const major = Math.floor(Number(row!.server_version_num) / 10000)
    expect(major).toBeGreaterThanOrEqual(13)
    const requested = inject('pgMajor')
    if (requested !== null) expect(major).toBe(requested)
  } finally {
    await sql.end({ timeout: 1 })
  }
})
