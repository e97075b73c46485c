// Network namespaces for tests: each "host" is a namespace joined to the root namespace by a veth
// pair (10.213.<n>.1 on the root side, 10.213.<n>.2 inside), so a process started in it reaches the
// root namespace (the database, the test) and the test reaches it, over a link the test can cut.
// A cut drops every packet both ways without telling anyone — the way a real network fails, with no
// RST and no ICMP: each side's egress queue becomes a pfifo that holds zero packets (iproute2's `tc`
// with no extra kernel module; `ip link set down` when even that is unavailable). Every name starts
// with a prefix, so a crashed run's leftovers are found and removed by name.
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { userInfo } from 'node:os'
import { promisify } from 'node:util'

const run = promisify(execFile)

export const PREFIX = 'chp'

async function ip(args: string[]): Promise<string> {
  return (await run('ip', args)).stdout
}

async function tryIp(args: string[]): Promise<void> {
  await run('ip', args).catch(() => undefined)
}

/** Why namespaces cannot be made here, or null when they can (root, `ip`, CAP_NET_ADMIN). */
export async function netnsUnavailable(): Promise<string | null> {
  if (process.platform !== 'linux') return 'network namespaces are Linux only'
  if (userInfo().uid !== 0) return 'needs root (ip netns add)'
  try {
    await run('ip', ['-V'])
  } catch {
    return 'iproute2 (`ip`) is not installed'
  }
  const probe = `${PREFIX}-probe`
  try {
    await ip(['netns', 'add', probe])
    await ip(['link', 'add', `${probe}h`, 'type', 'veth', 'peer', 'name', `${probe}n`])
    return null
  } catch (err) {
    return `cannot make a namespace and a veth pair (no CAP_NET_ADMIN?): ${String((err as { stderr?: string }).stderr ?? err).trim()}`
  } finally {
    await tryIp(['link', 'del', `${probe}h`])
    await tryIp(['netns', 'del', probe])
  }
}

/** Kills every process in the prefixed namespaces, deletes them and the prefixed links. */
export async function removeLeftovers(): Promise<void> {
  const names = (await ip(['netns', 'list']).catch(() => ''))
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((n) => n.startsWith(`${PREFIX}-`))
  for (const ns of names) {
    const pids = (await ip(['netns', 'pids', ns]).catch(() => '')).split('\n').filter(Boolean)
    for (const pid of pids) {
      try {
        process.kill(Number(pid), 'SIGKILL')
      } catch {
        // already gone
      }
    }
    await tryIp(['netns', 'del', ns])
  }
  const links = (await ip(['-o', 'link', 'show']).catch(() => ''))
    .split('\n')
    .map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1])
    .filter((n): n is string => !!n && n.startsWith(PREFIX))
  for (const link of links) await tryIp(['link', 'del', link])
}

export interface Host {
  /** The namespace's name. */
  readonly ns: string
  /** The host's address inside its namespace. */
  readonly address: string
  /** The root namespace's address on this host's link: what the host uses to reach the database. */
  readonly gateway: string
  /** Starts `node <args>` inside the namespace. */
  spawnNode(args: string[], env: Record<string, string>): ChildProcess
  /** Drops every packet to and from this host until `heal()`. */
  cut(): Promise<void>
  heal(): Promise<void>
  /** How the last cut was made. */
  readonly cutBy: string
}

/** Makes namespace `<PREFIX>-<n>` with its veth pair and addresses, n in 1…250. */
export async function makeHost(n: number): Promise<Host> {
  const ns = `${PREFIX}-${n}`
  const outer = `${PREFIX}${n}h`
  const inner = `${PREFIX}${n}n`
  const gateway = `10.213.${n}.1`
  const address = `10.213.${n}.2`
  await ip(['netns', 'add', ns])
  await ip(['link', 'add', outer, 'type', 'veth', 'peer', 'name', inner])
  await ip(['link', 'set', inner, 'netns', ns])
  await ip(['addr', 'add', `${gateway}/24`, 'dev', outer])
  await ip(['link', 'set', outer, 'up'])
  await ip(['-n', ns, 'addr', 'add', `${address}/24`, 'dev', inner])
  await ip(['-n', ns, 'link', 'set', inner, 'up'])
  await ip(['-n', ns, 'link', 'set', 'lo', 'up'])
  let cutBy = ''
  return {
    ns,
    address,
    gateway,
    get cutBy() {
      return cutBy
    },
    spawnNode(args, env) {
      return spawn('ip', ['netns', 'exec', ns, process.execPath, ...args], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] })
    },
    async cut() {
      try {
        await run('tc', ['qdisc', 'add', 'dev', outer, 'root', 'pfifo', 'limit', '0'])
        await run('tc', ['-n', ns, 'qdisc', 'add', 'dev', inner, 'root', 'pfifo', 'limit', '0'])
        cutBy = 'tc pfifo limit 0 on both ends'
      } catch {
        await run('tc', ['qdisc', 'del', 'dev', outer, 'root']).catch(() => undefined)
        await ip(['link', 'set', outer, 'down'])
        cutBy = 'ip link set down (root side)'
      }
    },
    async heal() {
      await run('tc', ['qdisc', 'del', 'dev', outer, 'root']).catch(() => undefined)
      await run('tc', ['-n', ns, 'qdisc', 'del', 'dev', inner, 'root']).catch(() => undefined)
      await ip(['link', 'set', outer, 'up'])
    },
  }
}

