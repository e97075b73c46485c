// A real nats-server (Debian's package, installed by scripts/install-system-deps.sh) on a free port
// in a temp dir. `natsBinary` is null when it is not installed.
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { BrokerProcess, findBinary } from './broker.js'
import { freeBase } from './ports.js'

export const natsBinary = findBinary('/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server')
export const noNats = 'nats-server is not installed (scripts/install-system-deps.sh installs it)'

export interface NatsServer {
  readonly url: string
  readonly broker: BrokerProcess
  /** The HTTP monitoring endpoint (`/connz`, `/subsz`) when asked for with `monitor`. */
  readonly monitorUrl: string | null
}

/** Starts nats-server; `maxPayload` sets its max_payload in bytes (default: the server's 1 MiB); `monitor` opens its HTTP monitoring port. */
export async function startNats(opts: { maxPayload?: number; monitor?: boolean } = {}): Promise<NatsServer> {
  if (!natsBinary) throw new Error(noNats)
  const monitorPort = opts.monitor ? await freeBase(0) : null
  const broker = await BrokerProcess.start(
    'nats',
    natsBinary,
    (port, dir) => ['-a', '127.0.0.1', '-p', String(port), '-c', join(dir, 'nats.conf'), ...(monitorPort ? ['-m', String(monitorPort)] : [])],
    /Server is ready/,
    (dir) => writeFile(join(dir, 'nats.conf'), opts.maxPayload === undefined ? '' : `max_payload: ${opts.maxPayload}\n`),
  )
  return { url: `nats://127.0.0.1:${broker.port}`, broker, monitorUrl: monitorPort ? `http://127.0.0.1:${monitorPort}` : null }
}
