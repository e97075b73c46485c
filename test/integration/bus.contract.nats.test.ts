// The NATS transport against the shared bus contract, on a real nats-server (max_payload 256 KiB)
// killed with SIGKILL and restarted on its port for the lost-connection case.
import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createTransport } from '../../src/bus/select.js'
import { busContract, clusterOverBus, recordingLogger, startQuietly } from '../contract/bus.contract.js'
import { natsBinary, noNats, startNats, type NatsServer } from '../helpers/nats.js'

const log = pino({ level: 'silent' })

describe.skipIf(!natsBinary)(`bus over NATS${natsBinary ? '' : ` — skipped: ${noNats}`}`, () => {
  let server: NatsServer
  beforeAll(async () => {
    server = await startNats({ maxPayload: 256 * 1024 })
  })
  afterAll(async () => {
    await server?.broker.stop()
  })
  const interrupt = async () => {
    await server.broker.kill()
    await new Promise((r) => setTimeout(r, 200))
    await server.broker.restart()
  }

  busContract(
    'NATS',
    async (cluster) => {
      const make = () => createTransport({ url: server.url }, { log, prefix: cluster })
      return [make(), make()]
    },
    { interruption: 'kill -9 of nats-server, then a restart on its port', interrupt },
  )

  it('warns at start, naming both numbers, when the server’s max_payload is below bus.maxPayloadBytes', async () => {
    const { log: recording, lines } = recordingLogger()
    const small = createTransport({ url: server.url }, { log: recording, prefix: 'warn', maxPayloadBytes: 1024 * 1024 })
    const fits = createTransport({ url: server.url }, { log: recording, prefix: 'fits', maxPayloadBytes: 64 * 1024 })
    try {
      await startQuietly(small)
      const warnings = lines.filter((l) => l.level === 40)
      expect(warnings).toHaveLength(1)
      expect(warnings[0]).toMatchObject({ serverLimitBytes: 256 * 1024, maxPayloadBytes: 1024 * 1024 })
      expect(warnings[0]!.msg).toContain('max_payload')
      await startQuietly(fits)
      expect(lines.filter((l) => l.level === 40)).toHaveLength(1)
    } finally {
      await Promise.all([small.close(), fits.close()])
    }
  })

  clusterOverBus('NATS', () => server.url, interrupt)
})
