// A network partition, not a crash: three instances, each in its own network namespace, on one
// PostgreSQL 15 (Debian's) in the root namespace. Under load, one instance's link is cut — every
// packet dropped both ways, no RST, no ICMP — and the test checks, from what each side printed and
// what the database holds: the cut instance isolates itself before its peers declare it down (both
// on this host's clock); the lock it held and the jobs it had claimed go to its peers; a STOMP client
// connected to it resumes on a peer without losing a message; after the heal it rejoins with a new
// epoch; and the chaos suite's history checks pass (fenced writes never overlap, tokens strictly
// increase, every transactional job has exactly one effect).
import { execFile, type ChildProcess } from 'node:child_process'
import { appendFile, chmod, mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { promisify } from 'node:util'
import { Client, type IMessage } from '@stomp/stompjs'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocket } from 'ws'
// @ts-expect-error the chaos suite is plain JavaScript
import { checkFence, checkTokens, checkTransactionalJobs } from '../../scripts/chaos/checks.mjs'
// @ts-expect-error the chaos suite is plain JavaScript
import { createAppSchema } from '../../scripts/chaos/database.mjs'
// @ts-expect-error the chaos suite is plain JavaScript
import { readDatabase } from '../../scripts/chaos/history.mjs'
import { postgresUser } from '../../src/db/embedded.js'
import { makeHost, netnsUnavailable, removeLeftovers, type Host } from '../helpers/netns.js'
import { freeBase } from '../helpers/ports.js'
import { ownedDir, PG_BIN } from '../helpers/replica.js'
import { until } from '../helpers/stomp.js'

const run = promisify(execFile)
const fixture = new URL('../fixtures/partition-node.mjs', import.meta.url).pathname
const unavailable = await netnsUnavailable()

interface Line {
  [key: string]: unknown
  type: string
  /** The instance's wall clock when it printed the line (this host's clock). */
  at: number
}

/** An instance in its namespace: the JSON lines it printed, commands on stdin. */
class Instance {
  readonly lines: Line[] = []
  readonly stderr: string[] = []
  readonly child: ChildProcess
  constructor(readonly id: string, readonly host: Host, env: Record<string, string>) {
    this.child = host.spawnNode([fixture], { ...env, CHORUS_INSTANCE_ID: id, LISTEN_HOST: host.address })
    createInterface({ input: this.child.stdout! }).on('line', (text) => {
      try {
        this.lines.push(JSON.parse(text) as Line)
      } catch {
        this.stderr.push(text)
      }
    })
    createInterface({ input: this.child.stderr! }).on('line', (text) => {
      this.stderr.push(text)
      if (this.stderr.length > 100) this.stderr.shift()
    })
  }
  of(type: string, pred: (l: Line) => boolean = () => true): Line[] {
    return this.lines.filter((l) => l.type === type && pred(l))
  }
  first(type: string, pred?: (l: Line) => boolean): Line | undefined {
    return this.of(type, pred)[0]
  }
  send(cmd: Record<string, unknown>): void {
    this.child.stdin!.write(JSON.stringify(cmd) + '\n')
  }
  describe(): string {
    const counts: Record<string, number> = {}
    for (const l of this.lines) counts[l.type] = (counts[l.type] ?? 0) + 1
    const notable = this.lines.filter((l) => /isolated|rejoined|down|lost|crash|error|failed/.test(l.type)).slice(-8)
    return `${this.id} (exit ${this.child.exitCode}): ${JSON.stringify(counts)}\n  ${notable.map((l) => JSON.stringify(l)).join('\n  ')}\n  ${this.stderr.slice(-6).join('\n  ')}`
  }
}

/** A bounded wait on what the processes printed; on timeout, says what each had done. */
async function waitFor(what: string, check: () => boolean, ms: number, everyone: Instance[]): Promise<void> {
  try {
    await until(check, ms, what)
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${everyone.map((i) => i.describe()).join('\n')}`)
  }
}

const PG_DIR_PREFIX = 'chorus-partition-'

/** Stops the database of a crashed earlier run (its directory is named by the prefix) and removes its files. */
async function removeOldPostgres(): Promise<void> {
  const ids = await postgresUser()
  for (const name of (await readdir(tmpdir())).filter((n) => n.startsWith(PG_DIR_PREFIX))) {
    const data = join(tmpdir(), name, 'data')
    await run(join(PG_BIN, 'pg_ctl'), ['-D', data, '-m', 'immediate', '-w', '-t', '30', 'stop'], { ...ids, env: { ...process.env, LC_ALL: 'C' } }).catch(() => undefined)
    await rm(join(tmpdir(), name), { recursive: true, force: true })
  }
}

/** Debian's PostgreSQL 15, run as `postgres`, listening on 127.0.0.1 and each host's gateway address. */
async function startPostgres(addresses: string[]): Promise<{ port: number; dir: string; stop(): Promise<void> }> {
  const ids = await postgresUser()
  const dir = await mkdtemp(join(tmpdir(), PG_DIR_PREFIX))
  await chmod(dir, 0o755)
  const data = await ownedDir(join(dir, 'data'), ids)
  const env = { ...process.env, LC_ALL: 'C' }
  await run(join(PG_BIN, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--locale=C', '--no-sync'], { ...ids, env })
  const port = await freeBase(1)
  const settings = { listen_addresses: ['127.0.0.1', ...addresses].join(','), port: String(port), unix_socket_directories: '', max_connections: '300', fsync: 'off' }
  await appendFile(join(data, 'postgresql.conf'), '\n' + Object.entries(settings).map(([k, v]) => `${k} = '${v}'`).join('\n') + '\n')
  await appendFile(join(data, 'pg_hba.conf'), '\nhost all all 10.213.0.0/16 trust\n')
  const logFile = join(await ownedDir(join(dir, 'log'), ids, 0o755), 'pg.log')
  const pgCtl = (args: string[]) => run(join(PG_BIN, 'pg_ctl'), ['-D', data, ...args], { ...ids, env })
  await pgCtl(['-l', logFile, '-w', '-t', '60', 'start'])
  return { port, dir, stop: () => pgCtl(['-m', 'immediate', '-w', '-t', '60', 'stop']).then(() => undefined, () => undefined) }
}

/** A STOMP client as a browser behind a balancer has it: first to `urls[0]`, after any drop to the next of the others. */
function stompClient(urls: string[]) {
  const state = { connects: [] as string[], messages: [] as { id: string; body: string; url: string; gap?: string; rx: number }[], lastId: undefined as string | undefined }
  let next = 0
  let url = urls[0]!
  const client = new Client({
    webSocketFactory: () => {
      url = next === 0 ? urls[0]! : urls[1 + ((next - 1) % (urls.length - 1))]!
      next++
      return new WebSocket(url, ['v12.stomp']) as unknown as globalThis.WebSocket
    },
    heartbeatIncoming: 500,
    heartbeatOutgoing: 500,
    // A silent network sends no close: give up on the socket at once when heartbeats stop.
    discardWebsocketOnCommFailure: true,
    connectionTimeout: 3000,
    reconnectDelay: 200,
    debug: () => undefined,
  })
  client.onConnect = (frame) => {
    if (state.lastId === undefined) state.lastId = frame.headers['chorus-head']
    state.connects.push(url)
    const at = url
    client.subscribe(
      '/topic/partition',
      (m: IMessage) => {
        state.messages.push({ id: m.headers['message-id']!, body: m.body, url: at, gap: m.headers['chorus-gap'], rx: Date.now() })
        if (!m.headers['chorus-gap']) state.lastId = m.headers['message-id']
      },
      state.lastId ? { 'chorus-last-id': state.lastId } : {},
    )
  }
  client.activate()
  return { client, state }
}

describe.skipIf(unavailable !== null)(`a network partition${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  const hosts: Host[] = []
  const instances: Instance[] = []
  let pg: Awaited<ReturnType<typeof startPostgres>> | undefined
  let sql: postgres.Sql | undefined
  let stomp: ReturnType<typeof stompClient> | undefined

  beforeAll(async () => {
    // A crashed run's namespaces, links, processes and database.
    await removeLeftovers()
    await removeOldPostgres()
    for (const n of [1, 2, 3]) hosts.push(await makeHost(n))
    pg = await startPostgres(hosts.map((h) => h.gateway))
    const admin = postgres(`postgres://postgres@127.0.0.1:${pg.port}/postgres`, { max: 1, onnotice: () => undefined })
    await admin`create database partition`
    await admin.end()
    sql = postgres(`postgres://postgres@127.0.0.1:${pg.port}/partition`, { max: 2, onnotice: () => undefined })
    await createAppSchema(sql)
  })

  afterAll(async () => {
    await stomp?.client.deactivate().catch(() => undefined)
    for (const i of instances) if (i.child.exitCode === null) i.child.kill('SIGKILL')
    await removeLeftovers() // kills whatever still runs in the namespaces (the node under `ip netns exec`)
    await sql?.end({ timeout: 1 })
    await pg?.stop()
    if (pg) await rm(pg.dir, { recursive: true, force: true })
  })

  it('isolates the cut instance before its peers declare it down, hands its work over, and rejoins after the heal', { timeout: 170_000 }, async () => {
    const started = Date.now()
    const ids = ['node-1', 'node-2', 'node-3']
    for (const [i, id] of ids.entries()) {
      instances.push(new Instance(id, hosts[i]!, { DATABASE_URL: `postgres://postgres@${hosts[i]!.gateway}:${pg!.port}/partition`, CHORUS_SECRET: 'partition-system-secret-0123456789' }))
    }
    const [victim, publisher, third] = instances as [Instance, Instance, Instance]
    const peers = [publisher, third]
    // All three start at once (one of them migrates the schema); each must print ready.
    for (const i of instances) await waitFor(`${i.id} ready`, () => i.first('ready') !== undefined || i.child.exitCode !== null, 60_000, instances)
    for (const i of instances) expect(i.first('ready'), i.describe()).toBeDefined()

    // The victim takes the held lock first; then everyone loads.
    victim.send({ cmd: 'load', hold: true })
    await waitFor('the victim holding fence-b', () => victim.first('lock-grant', (l) => l.name === 'fence-b') !== undefined, 20_000, instances)
    publisher.send({ cmd: 'load', hold: true, publish: true })
    third.send({ cmd: 'load', hold: true })
    const heldToken = BigInt(victim.first('lock-grant', (l) => l.name === 'fence-b')!.token as string)

    const port = (i: Instance) => i.first('ready')!.port as number
    stomp = stompClient(instances.map((i) => `ws://${i.host.address}:${port(i)}/stomp`))
    const client = stomp.state
    const victimUrl = `ws://${victim.host.address}:${port(victim)}/stomp`

    // Cut while the victim has claimed unfinished jobs and its client has had messages from it.
    const unfinished = () => {
      const done = new Set(victim.of('completed').map((l) => l.id))
      return victim.of('started').filter((l) => !done.has(l.id))
    }
    await waitFor(
      'load on every instance, a claimed job running on the victim, messages through the victim',
      () =>
        instances.every((i) => i.of('write', (l) => l.accepted === true).length >= 3) &&
        client.messages.filter((m) => m.url === victimUrl).length >= 5 &&
        // A job started moments ago is still in its handler (800 ms) when the cut lands.
        unfinished().some((l) => Date.now() - l.at < 400),
      60_000,
      instances,
    )
    const cutAt = Date.now()
    await victim.host.cut()
    // What the victim had claimed and not finished, from the database: it can commit nothing more.
    const inFlight = (await sql!<{ id: string }[]>`select id::text from chorus.jobs where state = 'running' and claimed_by = 'node-1'`).map((r) => r.id)

    // The victim isolates itself; both peers declare it down; a peer takes the lock over.
    const downOf = (p: Instance) => p.first('down', (l) => l.member === 'node-1' && l.at > cutAt)
    await waitFor('isolation and both peers declaring the victim down', () => victim.first('isolated', (l) => l.at > cutAt) !== undefined && peers.every((p) => downOf(p)), 30_000, instances)
    const isolated = victim.first('isolated', (l) => l.at > cutAt)!
    const [member] = await sql!<{ down_at: Date; status: string }[]>`select down_at, status from chorus.members where instance_id = 'node-1'`
    const takeover = () => peers.flatMap((p) => p.of('lock-grant', (l) => l.name === 'fence-b' && l.at > cutAt))[0]
    await waitFor('a peer granted the held lock', () => takeover() !== undefined, 45_000, instances)

    // Its claimed jobs ran elsewhere: each has its one effect, written by a peer.
    const effectsOf = async () => sql!<{ job_id: string; run: string }[]>`select job_id::text, run from chaos.tx_effects where job_id = any(${inFlight}::bigint[])`
    for (let deadline = Date.now() + 30_000; (await effectsOf()).length < inFlight.length && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 200))
    const moved = await effectsOf()

    // The STOMP client notices the silence, reconnects to a peer, and gets what was published since.
    const publishedAfterCut = () => publisher.of('published', (l) => l.at > cutAt + 500)
    await waitFor(
      'the STOMP client resumed on a peer and received messages published after the cut',
      () => client.connects.length >= 2 && publishedAfterCut().length > 0 && client.messages.some((m) => m.url !== victimUrl && Number(m.body) >= (publishedAfterCut()[0]!.seq as number)),
      30_000,
      instances,
    )

    // The heal: the victim rejoins with a new epoch, and takes locks again.
    const healAt = Date.now()
    await victim.host.heal()
    await waitFor('the victim rejoined', () => victim.first('rejoined', (l) => l.at > healAt) !== undefined, 30_000, instances)
    const rejoined = victim.first('rejoined', (l) => l.at > healAt)!
    await waitFor('the victim granted fence-a again', () => victim.first('lock-grant', (l) => l.name === 'fence-a' && l.at > rejoined.at) !== undefined, 30_000, instances)
    // Its stale holder of fence-b writes on; the fence refuses it.
    await waitFor('a stale write of the victim refused', () => victim.first('write', (l) => l.name === 'fence-b' && l.accepted === false && l.at > healAt) !== undefined, 30_000, instances)

    for (const i of instances) i.send({ cmd: 'stop' })
    await waitFor('every instance stopped', () => instances.every((i) => i.first('stopped') !== undefined), 30_000, instances)
    for (let deadline = Date.now() + 30_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 200))) {
      const [row] = await sql!<{ n: number }[]>`select count(*)::int as n from chorus.jobs where name = 'chaos-tx' and state in ('queued', 'running')`
      if (row!.n === 0) break
    }

    // ---- verdicts --------------------------------------------------------------------------------
    for (const i of instances) expect(i.of('crash'), i.describe()).toEqual([])
    expect(stomp.state.connects[0]).toBe(victimUrl)

    // Isolation strictly before any peer declared the victim down, on this host's one clock: the
    // victim's Date.now() at isolation against the database's down_at and each peer's Date.now() at
    // the member:down event.
    expect(member?.status).toBe('down')
    const downDb = member!.down_at.getTime()
    const downSeen = Math.min(...peers.map((p) => downOf(p)!.at))
    expect(isolated.at, 'isolated after the database declared the victim down').toBeLessThan(downDb)
    expect(isolated.at, 'isolated after a peer saw the victim down').toBeLessThan(downSeen)
    expect(victim.first('lock-lost', (l) => l.name === 'fence-b'), 'the held lock was not aborted on isolation').toBeDefined()

    // The lock went to a peer with a greater token; the jobs the victim had claimed ran elsewhere.
    const took = takeover()!
    expect(BigInt(took.token as string)).toBeGreaterThan(heldToken)
    expect(inFlight.length).toBeGreaterThan(0)
    expect(moved.map((m) => m.job_id).sort(), 'claimed jobs of the victim left undone').toEqual([...inFlight].sort())
    const victimRun = victim.first('ready')!.run as string
    expect(moved.filter((m) => m.run === victimRun), 'claimed jobs of the victim finished by the victim').toEqual([])

    // The client resumed without a gap or a duplicate: the publisher's messages arrived in order, each once.
    const bodies = client.messages.filter((m) => !m.gap).map((m) => Number(m.body))
    expect(client.messages.filter((m) => m.gap), 'gap notices').toEqual([])
    expect(bodies, 'messages lost or repeated across the reconnect').toEqual(bodies.map((_, k) => bodies[0]! + k))

    // A new, larger epoch.
    expect(rejoined.previousEpoch).toBe(isolated.epoch)
    expect(rejoined.epoch as number).toBeGreaterThan(isolated.epoch as number)

    // The chaos suite's history checks, on the same tables.
    const runs = new Map(instances.map((i) => {
      const r = i.first('ready')!.run as string
      return [r, { run: r, lines: i.lines.map((l) => ({ ...l, k: l.type, t: l.at })) }]
    }))
    const db = await readDatabase(sql)
    for (const w of db.fenceWrites) w.at = new Date(w.at)
    const verdicts = [checkFence(db, runs), checkTokens(runs), checkTransactionalJobs(runs, db)] as { name: string; passed: boolean; detail: string }[]
    const failed = verdicts.filter((v) => !v.passed)
    let story = ''
    if (failed.length > 0) {
      // What happened to each doubled job: its effect rows and every line about it, against the cut.
      const doubled = await sql!`select e.job_id::text, e.run, e.at, j.attempts, j.claimed_by from chaos.tx_effects e join chorus.jobs j on j.id = e.job_id
        where e.job_id in (select job_id from chaos.tx_effects group by job_id having count(*) > 1) order by e.job_id, e.at`
      const ids = new Set(doubled.map((d) => d.job_id as string))
      const about = instances.flatMap((i) => i.lines.filter((l) => ids.has(l.id as string)).map((l) => `${i.id} ${JSON.stringify(l)}`))
      story = `cut ${cutAt}, isolated ${isolated.at}, heal ${healAt}, rejoined ${rejoined.at}\n${JSON.stringify(doubled)}\n${about.join('\n')}`
    }
    expect(failed.map((v) => `${v.name}: ${v.detail}`), story).toEqual([])

    const reconnect = client.messages.find((m) => m.url !== victimUrl)!
    console.log(
      `partition (${victim.host.cutBy}): isolated ${isolated.at - cutAt} ms after the cut, ` +
        `${downDb - isolated.at} ms before the database declared it down (down_at), ${downSeen - isolated.at} ms before a peer saw it down; ` +
        `held lock taken over ${took.at - cutAt} ms after the cut; ${inFlight.length} claimed jobs done elsewhere; ` +
        `STOMP client on a peer receiving ${reconnect.rx - cutAt} ms after the cut; rejoined ${rejoined.at - healAt} ms after the heal (epoch ${isolated.epoch} → ${rejoined.epoch}); ` +
        verdicts.map((v) => `${v.name}: ${v.detail}`).join('; ') +
        `; whole test ${Date.now() - started} ms`,
    )
  })
})
