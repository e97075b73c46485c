// The Redis transport against the shared bus contract, on a real redis-server killed with SIGKILL
// and restarted on its port for the lost-connection case. Classic and sharded Pub/Sub both run.
import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createTransport } from '../../src/bus/select.js'
import type { Transport } from '../../src/bus/transport.js'
import { busContract, clusterOverBus, recordingLogger, startQuietly } from '../contract/bus.contract.js'
import { noRedis, redisBinary, startRedis, type RedisServer } from '../helpers/redis.js'

const log = pino({ level: 'silent' })

describe.skipIf(!redisBinary)(`bus over Redis${redisBinary ? '' : ` — skipped: ${noRedis}`}`, () => {
  let server: RedisServer
  beforeAll(async () => {
    // An 8 MB Pub/Sub output-buffer limit (Redis's default is 32 MB): the transport's message limit
    // is half of it, and a 10,000-message burst waiting for a busy receiver stays well below it.
    server = await startRedis([['client-output-buffer-limit', 'pubsub 8mb 0 0']])
  })
  afterAll(async () => {
    await server?.broker.stop()
  })
  const interrupt = async () => {
    await server.broker.kill()
    await new Promise((r) => setTimeout(r, 200))
    await server.broker.restart()
  }

  for (const sharded of ['false', 'auto']) {
    busContract(
      `Redis (sharded=${sharded})`,
      async (cluster) => {
        const make = () => createTransport({ url: `${server.url}?sharded=${sharded}` }, { log, prefix: cluster })
        return [make(), make()]
      },
      { interruption: 'kill -9 of redis-server, then a restart on its port', interrupt },
    )
  }

  it('takes half the Pub/Sub output-buffer limit as its message limit and warns at start when bus.maxPayloadBytes is above it', async () => {
    const { log: recording, lines } = recordingLogger()
    const t = createTransport({ url: server.url }, { log: recording, prefix: 'warn', maxPayloadBytes: 8 * 1024 * 1024 })
    try {
      await startQuietly(t)
      expect((t as unknown as { maxEnvelopeBytes: number }).maxEnvelopeBytes).toBe(4 * 1024 * 1024)
      const warnings = lines.filter((l) => l.level === 40)
      expect(warnings).toHaveLength(1)
      expect(warnings[0]).toMatchObject({ serverLimitBytes: 4 * 1024 * 1024, maxPayloadBytes: 8 * 1024 * 1024 })
    } finally {
      await t.close()
    }
  })

  it('uses sharded Pub/Sub only when the URL asks for it', async () => {
    const classic = createTransport({ url: server.url }, { log, prefix: 'mode' }) as unknown as { sharded: boolean } & Transport
    const auto = createTransport({ url: `${server.url}?sharded=auto` }, { log, prefix: 'mode' }) as unknown as { sharded: boolean } & Transport
    try {
      await startQuietly(classic)
      await startQuietly(auto)
      expect(classic.sharded).toBe(false)
      // Debian's Redis 7 has SSUBSCRIBE.
      expect(auto.sharded).toBe(true)
    } finally {
      await Promise.all([classic.close(), auto.close()])
    }
  })

  clusterOverBus('Redis', () => server.url, interrupt)
})
