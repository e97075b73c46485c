/**
 * The `chorus` command: its subcommands and options, and how it ends — every failure one line on
 * stderr and a documented exit code (see report.ts).
 */
import { Command, CommanderError, InvalidArgumentError } from 'commander'
import { readFileSync } from 'node:fs'
import { TrustedProxies } from '../balancer/forwarded.js'
import { balancerCommand } from './balancer.js'
import { configCommand } from './config.js'
import { dashboardCommand } from './dashboard.js'
import { migrateCommand } from './migrate.js'
import { nginxCommand } from './nginx.js'
import { EXIT, EXIT_HELP, fail } from './report.js'
import { addSecretFileOptions, resolveSecretOptions } from './secrets.js'
import { status } from './status.js'
import { up } from './up.js'

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }

function int(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value)
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`must be an integer from ${min} to ${max}`)
    return n
  }
}

// exitOverride and configureOutput come first: subcommands inherit them when created.
const program = new Command('chorus')
  .description('Run one Node.js app server as a cluster of instances on one PostgreSQL')
  .version(pkg.version)
  .option('--debug', 'on an error, print its stack (and its causes) after the one-line message')
  .exitOverride()
  .configureOutput({ outputError: (text, write) => write(`chorus: ${text.replace(/^error: /, '')}`) })
  .addHelpText('after', EXIT_HELP)

program
  .command('up')
  .description('run a whole cluster in one terminal: PostgreSQL (embedded unless a URL is given), N instances of an app, the balancer and the dashboard, supervised')
  .requiredOption('--app <path>', 'the app: a script, a module whose default export is a function, or a directory (its package.json "main", its "start" script\'s node entry, or index.js/index.mjs)')
  .option('--instances <n>', 'number of instances', int(1, 64), 3)
  .option('--port <p>', 'balancer port; instances listen on P+1…P+N', int(1, 65000), 8080)
  .option('--database-url <url>', 'use this PostgreSQL instead of the embedded one (default: env DATABASE_URL)')
  .option('--data-dir <dir>', 'embedded PostgreSQL data directory', '.chorus/postgres')
  .option('--pg-port <port>', 'embedded PostgreSQL port (default: a free port)', int(0, 65535))
  .option('--schema <name>', 'schema of the Chorus tables (default: env CHORUS_SCHEMA, else chorus)', process.env.CHORUS_SCHEMA ?? 'chorus')
  .option('--roles <roles>', 'roles given to every instance (comma-separated)')
  .option('--no-balancer', 'do not start the balancer on --port')
  .option('--sticky', 'the balancer pins each client to one instance with a signed cookie')
  .option('--dashboard-port <p>', 'port of the dashboard (0: any free port)', int(0, 65535), 8761)
  .option('--no-dashboard', 'do not start the dashboard')
  .option('--watch', 'restart the instances one at a time when a file of the app\'s directory changes')
  .option('--config-dir <dir>', 'push this configuration directory (application.yml, {app}-{profile}.yml, …) as cluster.config before the instances start')
  .option('--log-format <format>', 'pretty (one line per record, prefixed with the process name) or json (pino records with a "process" field)', (v: string) => {
    if (v !== 'pretty' && v !== 'json') throw new InvalidArgumentError('pretty or json')
    return v
  }, 'pretty')
  .action(async (o: { app: string; instances: number; port: number; databaseUrl?: string; dataDir: string; pgPort?: number; schema: string; roles?: string; balancer: boolean; dashboard: boolean; dashboardPort: number; sticky?: boolean; watch?: boolean; logFormat: 'pretty' | 'json'; configDir?: string }) => {
    process.exit(await up(o))
  })

program
  .command('balancer')
  .description('reverse proxy over the live members (HTTP and WebSocket)')
  .option('--port <p>', 'port to listen on', int(0, 65535), 8080)
  .option('--host <host>', 'address to listen on', '127.0.0.1')
  .option('--strategy <name>', 'round-robin or least-connections', (v: string) => {
    if (v !== 'round-robin' && v !== 'least-connections') throw new InvalidArgumentError('round-robin or least-connections')
    return v
  }, 'round-robin')
  .option('--sticky', 'pin each client to one instance with a signed cookie (needs CHORUS_SECRET)')
  .option('--health-path <path>', 'readiness path each instance answers (probed every second; 5xx: no new requests)', '/health/ready')
  .option('--trust-proxy <list>', 'addresses or CIDRs (comma-separated) of proxies in front whose X-Forwarded-For/Forwarded/X-Real-IP are believed (default: none, those headers are replaced)', (v: string) => {
    const list = v.split(',').map((s) => s.trim()).filter(Boolean)
    try {
      new TrustedProxies(list)
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message)
    }
    return list
  })
  .option('--database-url <url>', 'the cluster database (default: env DATABASE_URL, else the `chorus up` of this directory)')
  .option('--schema <name>', 'schema of the Chorus tables')
  .action(async (o: { port: number; host: string; strategy: 'round-robin' | 'least-connections'; sticky?: boolean; healthPath: string; trustProxy?: string[]; databaseUrl?: string; schema?: string }) => {
    await balancerCommand(o)
  })

program
  .command('dashboard')
  .description('web dashboard, JSON API, cluster metrics and Eureka-compatible registry')
  .option('--port <p>', 'port to listen on (0: any free port)', int(0, 65535), 8761)
  .option('--host <host>', 'address to listen on', '127.0.0.1')
  .option('--password <password>', 'the dashboard password (default: env CHORUS_DASHBOARD_PASSWORD; an argument shows in ps)')
  .option('--database-url <url>', 'the cluster database (default: env DATABASE_URL, else the `chorus up` of this directory)')
  .option('--schema <name>', 'schema of the Chorus tables')
  .action(async (o: { port: number; host: string; password?: string; databaseUrl?: string; schema?: string }) => {
    await dashboardCommand(o)
  })

program
  .command('nginx')
  .description('render an nginx config for the live members')
  .option('--out <file>', 'write to this file (atomically) instead of stdout')
  .option('--watch', 'rewrite the file whenever membership or a member\'s readiness changes (not-ready members are rendered down)')
  .option('--health-path <path>', 'readiness path probed on each member with --watch', '/health/ready')
  .option('--reload <command>', 'run this after each rewrite, e.g. "nginx -s reload"')
  .option('--listen <addr>', 'what nginx listens on', '8080')
  .option('--sticky', 'affinity by the chorus_affinity cookie (hash … consistent)')
  .option('--snippet', 'render only the http-level part, for an include in an existing config')
  .option('--run-dir <dir>', 'pid and temp directory of a full config', '/tmp/chorus-nginx')
  .option('--keepalive <n>', 'idle upstream connections kept per nginx worker (size it to your concurrency)', int(1, 100000), 128)
  .option('--database-url <url>', 'the cluster database (default: env DATABASE_URL, else the `chorus up` of this directory)')
  .option('--schema <name>', 'schema of the Chorus tables')
  .action(async function (this: Command, o: { out?: string; watch?: boolean; reload?: string; listen: string; sticky?: boolean; snippet?: boolean; runDir: string; keepalive: number; databaseUrl?: string; schema?: string; healthPath: string }) {
    if (o.watch && !o.out) this.error('--watch needs --out', { exitCode: EXIT.usage })
    await nginxCommand(o)
  })

program
  .command('status')
  .description('list the members of the cluster')
  .option('--json', 'print the members as one JSON array')
  .option('--details', 'with --json: an object with members, locks and jobs (singletons, cron)')
  .option('--database-url <url>', 'the cluster database (default: env DATABASE_URL, else the `chorus up` of this directory)')
  .option('--schema <name>', 'schema of the Chorus tables')
  .action(async (o: { json?: boolean; details?: boolean; databaseUrl?: string; schema?: string }) => {
    await status(o)
  })

program
  .command('migrate')
  .description('apply pending migrations')
  .option('--database-url <url>', 'the cluster database (default: env DATABASE_URL, else the `chorus up` of this directory)')
  .option('--schema <name>', 'schema of the Chorus tables')
  .action(async (o: { databaseUrl?: string; schema?: string }) => {
    await migrateCommand(o)
  })

configCommand(program)

// Every secret option gets a file twin (--password-file, --database-url-file); a secret given as an
// argument gets a warning on stderr before the command runs.
for (const command of program.commands) addSecretFileOptions(command)
program.hook('preAction', (_program, action) => resolveSecretOptions(action))

const debug = (): boolean => program.opts<{ debug?: boolean }>().debug === true
process.on('uncaughtException', (err) => fail(err, debug()))
process.on('unhandledRejection', (err) => fail(err, debug()))
try {
  await program.parseAsync(process.argv)
} catch (err) {
  // Commander has printed its own message (or the help, or the version) already.
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? EXIT.ok : EXIT.usage)
  fail(err, debug())
}
