// The in-memory transport against the shared bus contract (test/contract/bus.contract.ts).
import { MemoryHub, MemoryTransport } from '../../src/bus/memory.js'
import { busContract } from '../contract/bus.contract.js'

/** One hub per cluster, as one broker per cluster; a small size limit keeps the limit case light. */
const hubs = new Map<string, MemoryHub>()

busContract(
  'in-memory',
  async (cluster) => {
    let hub = hubs.get(cluster)
    if (!hub) hubs.set(cluster, (hub = new MemoryHub({ maxEnvelopeBytes: 256 * 1024 })))
    return [new MemoryTransport(hub), new MemoryTransport(hub)]
  },
  {
    interruption: 'the hub restarts',
    interrupt: async () => {
      await Promise.all([...hubs.values()].map((h) => h.interrupt()))
    },
  },
)
