// The Redis transport against the shared bus contract, on a real redis-server killed with SIGKILL
// and restarted on its port for the lost-connection case. Classic and sharded Pub/Sub both run.
import { pino } from 'pino'
import { afterAll, beforeAll, describe } from 'vitest'
import { createTransport } from '../../src/bus/select.js'
import { busContract } from '../contract/bus.contract.js'
import { noRedis, redisBinary, startRedis, type RedisServer } from '../helpers/redis.js'

const log = pino({ level: 'silent' })

describe.skipIf(!redisBinary)(`bus over Redis${redisBinary ? '' : ` — skipped: ${noRedis}`}`, () => {
  let server: RedisServer
  beforeAll(async () => {
    // A 4 MB Pub/Sub output-buffer limit: the transport's message limit is half of it.
    server = await startRedis([['client-output-buffer-limit', 'pubsub 4mb 0 0']])
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
})
