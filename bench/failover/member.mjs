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

/** Commands the coordinator may send; each returns what it replies. */
const commands = {
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
