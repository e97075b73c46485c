// Shutdown with the database away: each example app, run as a real process on a database reached
// through a TCP proxy, gets SIGTERM after the proxy stopped passing traffic (refusing, or hanging
// like a partition) and must end by itself within the close deadline — no second signal, no
// SIGKILL from a process manager.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { eventually } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { freeBase } from '../helpers/ports.js'
import { Proc } from '../helpers/proc.js'
import { startProxy, type Proxy } from '../helpers/proxy.js'

const apps = {
  hello: new URL('../../examples/hello/server.mjs', import.meta.url).pathname,
  quiz: new URL('../../examples/quiz/server.mjs', import.meta.url).pathname,
}
const CLOSE_TIMEOUT_MS = 3000

describe('an example app whose database went away', () => {
  let db: TestDatabase
  const proxies: Proxy[] = []
  const procs: Proc[] = []

  beforeAll(async () => {
    db = await testDatabase()
  })

  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()))
    for (const p of proxies) await p.close()
    await db?.drop()
  })

  for (const [name, script] of Object.entries(apps)) {
    for (const failure of ['refuse', 'hang'] as const) {
      it(`${name}: ends within the close deadline after SIGTERM while the database ${failure === 'refuse' ? 'refuses connections' : 'hangs'}`, async () => {
        const proxy = await startProxy(db.url)
        proxies.push(proxy)
        const port = await freeBase(0)
        const proc = new Proc(script, [], {
          DATABASE_URL: proxy.url,
          CHORUS_INSTANCE_ID: `${name}-${failure}`,
          CHORUS_SECRET: 'shutdown-test-secret-0123456789',
          CHORUS_CLOSE_TIMEOUT_MS: String(CLOSE_TIMEOUT_MS),
          CHORUS_FILES_ROOT: `/tmp/chorus-shutdown-${process.pid}-${name}`,
          PORT: String(port),
          CHORUS_LOG_LEVEL: 'info',
        })
        procs.push(proc)
        await eventually(async () => (await fetch(`http://127.0.0.1:${port}/health/ready`).catch(() => null))?.status === 200, `${name} ready`, 30_000, 100)
        if (failure === 'refuse') proxy.refuse()
        else proxy.hang()
        // Not ready any more: the instance noticed.
        await eventually(async () => (await fetch(`http://127.0.0.1:${port}/health/ready`).catch(() => null))?.status === 503, `${name} not ready`, 15_000, 100)
        const sent = Date.now()
        proc.child.kill('SIGTERM')
        const outcome = await Promise.race([proc.exited, new Promise((r) => setTimeout(r, CLOSE_TIMEOUT_MS + 10_000, 'still running'))])
        const tookMs = Date.now() - sent
        expect(outcome, `${name} still running ${tookMs} ms after SIGTERM; stderr: ${proc.stderr.join('\n')}`).not.toBe('still running')
        expect((outcome as { code: number | null }).code).toBe(0)
        console.log(`${name} (${failure}): exited ${tookMs} ms after SIGTERM (close deadline ${CLOSE_TIMEOUT_MS} ms)`)
      })
    }
  }
})
