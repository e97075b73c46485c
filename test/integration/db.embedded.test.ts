import { existsSync } from 'node:fs'
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { findEmbedded, startEmbeddedPostgres, type EmbeddedPostgres } from '../../src/db/embedded.js'
import { ChorusError } from '../../src/errors.js'

describe('the embedded PostgreSQL', () => {
  let dir: string
  let dataDir: string
  let blocker: Server
  let takenPort: number
  const started: EmbeddedPostgres[] = []

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'chorus-embedded-'))
    await chmod(dir, 0o755) // as root the server runs as the postgres user, which must reach the data directory
    dataDir = join(dir, 'pg')
    blocker = createServer()
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
    takenPort = (blocker.address() as { port: number }).port
  })

  afterAll(async () => {
    for (const pg of started) await pg.stop()
    await new Promise((r) => blocker.close(r))
    await rm(dir, { recursive: true, force: true })
  })

  it('refuses a port that is already taken with CHORUS_ERR_EMBEDDED_PORT_IN_USE, before creating or starting anything', async () => {
    let err: unknown
    try {
      started.push(await startEmbeddedPostgres({ dataDir, port: takenPort }))
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(ChorusError)
    expect((err as ChorusError).code).toBe('CHORUS_ERR_EMBEDDED_PORT_IN_USE')
    expect((err as ChorusError).details.port).toBe(takenPort)
    expect((err as ChorusError).message).toContain(String(takenPort))
    expect(existsSync(join(dataDir, 'postmaster.pid'))).toBe(false)
    expect(await findEmbedded(dataDir)).toBeNull()
    // Refused before anything was created, so the same data directory starts fine once a free port is chosen (next test).
    expect(existsSync(join(dataDir, 'PG_VERSION'))).toBe(false)
    // The port is still ours.
    expect((blocker.address() as { port: number }).port).toBe(takenPort)
  })

  it('starts on a free port, is found and reused while it runs, and stops cleanly', async () => {
    const pg = await startEmbeddedPostgres({ dataDir, port: 0 })
    started.push(pg)
    expect(pg.owned).toBe(true)
    expect(pg.port).not.toBe(takenPort)
    const sql = postgres(pg.url, { max: 1, onnotice: () => undefined })
    try {
      const [row] = await sql<{ n: number }[]>`select 1 as n`
      expect(row!.n).toBe(1)
    } finally {
      await sql.end()
    }

    expect(await findEmbedded(dataDir)).toBe(pg.url)
    const again = await startEmbeddedPostgres({ dataDir, port: 0 })
    expect(again.owned).toBe(false)
    expect(again.url).toBe(pg.url)
    await again.stop() // not owned: a no-op
    expect(await findEmbedded(dataDir)).toBe(pg.url)

    await pg.stop()
    expect(existsSync(join(dataDir, 'postmaster.pid'))).toBe(false)
    expect(await findEmbedded(dataDir)).toBeNull()
  })
})
