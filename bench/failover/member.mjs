// One cluster member for the failover benchmark: joins from its environment (DATABASE_URL,
// CHORUS_INSTANCE_ID, CHORUS_PRESET, …) and reports to the coordinator over IPC, each report
// stamped with the moment it happened here. New probes add their commands to `commands`.
import { createCluster } from '../../dist/index.js'
import { now, serveParent } from '../lib/harness.mjs'

const report = (msg) => process.send?.({ ...msg, at: now() })

let cluster
try {
  cluster = await createCluster({ logLevel: process.env.CHORUS_LOG_LEVEL ?? 'error' })
} catch (err) {
  report({ type: 'start-failed', code: err.code, message: err.message })
  process.exit(3)
}

cluster.on('member:up', (e) => report({ type: 'member:up', id: e.member.instanceId }))
cluster.on('member:down', (e) => report({ type: 'member:down', id: e.member.instanceId, reason: e.reason }))
cluster.on('member:self:isolated', () => report({ type: 'isolated' }))

/** Commands the coordinator may send; each returns what it replies. Work runs in the background and is reported. */
const commands = {
  /** Takes an exclusive lock (waiting as long as needed); reports it, then holds it (`hold`) or releases it. */
  async lock({ name, hold }) {
    void cluster.locks.acquire(name, { mode: 'exclusive', waitMs: 60_000 }).then(async (lock) => {
      report({ type: 'lock-acquired', name, token: String(lock.token) })
      if (!hold) await lock.release()
    }, (err) => report({ type: 'lock-failed', name, message: err.message }))
    return {}
  },
  /** Defines a job that reports its start and then runs until the process dies. */
  async defineJob({ name }) {
    cluster.jobs.define(name, async (_payload, ctx) => {
      report({ type: 'job-started', name, attempt: ctx.attempt })
      if (process.env.BENCH_FAILOVER_JOB_HOLD !== '0') await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve))
    }, { timeoutMs: 600_000, retries: 5 })
    return {}
  },
  async enqueue({ name }) {
    return { jobId: await cluster.jobs.enqueue(name, {}) }
  },
  /** Registers a singleton that reports when it starts here. */
  async singleton({ name }) {
    cluster.singleton(name, { start: () => report({ type: 'singleton-started', name }) })
    return {}
  },
  async stop() {
    await cluster.close()
    setImmediate(() => process.exit(0))
    return {}
  },
}
serveParent(commands)

const { heartbeatMs, failAfterMs, preset } = cluster.options
report({ type: 'ready', id: cluster.instanceId, heartbeatMs, failAfterMs, preset })
// Events report changes from now on; the members already live are in list().
for (const m of cluster.members.list()) report({ type: 'member:up', id: m.instanceId })

process.on('SIGTERM', async () => {
  await cluster.close()
  process.exit(0)
})
