// A real redis-server (Debian's package, installed by scripts/install-system-deps.sh) on a free
// port in a temp dir, without persistence. `redisBinary` is null when it is not installed.
import { BrokerProcess, findBinary } from './broker.js'

export const redisBinary = findBinary('/usr/bin/redis-server', '/usr/local/bin/redis-server')
export const noRedis = 'redis-server is not installed (scripts/install-system-deps.sh installs it)'

export interface RedisServer {
  readonly url: string
  readonly broker: BrokerProcess
}

/** Starts redis-server; `config` adds `--name value` settings (e.g. ['client-output-buffer-limit', 'pubsub 4mb 0 0']). */
export async function startRedis(config: [string, string][] = []): Promise<RedisServer> {
  if (!redisBinary) throw new Error(noRedis)
  const broker = await BrokerProcess.start(
    'redis',
    redisBinary,
    (port, dir) => ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', '--daemonize', 'no', ...config.flatMap(([k, v]) => [`--${k}`, v])],
    /Ready to accept connections/,
  )
  return { url: `redis://127.0.0.1:${broker.port}`, broker }
}
