/**
 * The cluster: one instance's handle on everything. It owns the lifecycle
 * (starting → up ⇄ isolated → draining → stopped) and wires the subsystems in dependency order:
 * database, migrations, bus, membership. Closing runs the same order backwards: drain, leave,
 * then the bus and connections — so peers see a clean departure, never an expiry — and finishes
 * within `closeTimeoutMs` whatever the database does.
 */
import type { Logger } from 'pino'
import { Machine, type Transitions } from './util/machine.js'
import type { Bus } from './bus/bus.js'
import type { Db } from './db/connect.js'
import type { EmbeddedPostgres } from './db/embedded.js'
import { Health } from './health.js'
import { ChorusError, toError } from './errors.js'
import { Events, type ClusterEvents, type EventName, type Listener } from './events.js'
import type { ResolvedOptions } from './options.js'
import type { Subsystem, SubsystemDeps } from './subsystem.js'
import type { Singletons, Singleton } from './jobs/singleton.js'
import type { SingletonOptions } from './jobs/types.js'
import { NearCache, type Cacheable, type NearCacheOptions } from './cache/near-cache.js'
import { checkName, type Codec } from './state/codec.js'
import { SharedMap, type MapOptions } from './state/map.js'
import { Counter, type CounterOptions } from './state/counter.js'
import { Topic } from './state/topic.js'
import { ReliableTopic, type ReliableTopicOptions } from './state/reliable-topic.js'
import { Sessions } from './sessions/sessions.js'
import type { Config } from './config/config.js'
import type { Locks } from './locks/locks.js'
import type { Realtime } from './realtime/gateway.js'
import type { Jobs } from './jobs/jobs.js'
import type { Files } from './files/files.js'
import type { Rpc } from './rpc/rpc.js'
import type { Metrics } from './dashboard/metrics.js'
import type { Membership } from './membership/membership.js'

/**
 * States, and the states each may be entered from (anything else throws):
 * - `starting`: connecting, migrating, joining. Initial.
 * - `up`: a member, serving. From starting, or isolated once it rejoined.
 * - `isolated`: cut off from the database (could not renew in time, or declared down); exclusive
 *   work stopped; rejoining with a new epoch as soon as the database answers. From up.
 * - `draining`: `drain()`/`close()` began; no new work, in-flight work finishes. From up or isolated.
 * - `stopped`: left; every connection closed. From any state.
 */
export type ClusterState = 'starting' | 'up' | 'isolated' | 'draining' | 'stopped'

export const clusterEnteredFrom: Transitions<ClusterState> = {
  starting: [],
  up: ['starting', 'isolated'],
  isolated: ['up'],
  draining: ['up', 'isolated'],
  stopped: ['starting', 'up', 'isolated', 'draining'],
}

/** The subsystems the cluster serves through its getters, set once while it starts. */
interface Wired {
  config: Config
  locks: Locks
  jobs: Jobs
  singletons: Singletons
  realtime: Realtime
  files: Files
  rpc: Rpc
  metrics: Metrics
}

export class Cluster {
  readonly options: ResolvedOptions
  readonly log: Logger
  readonly members: Membership
  /** Low-level messaging between instances; the topics API builds on it. */
  readonly bus: Bus
  readonly #events: Events
  readonly #wired: Partial<Wired> = {}
  readonly #db: Db
  readonly #embedded: EmbeddedPostgres | null
  readonly #subsystems: Subsystem[] = []
  readonly #caches = new Map<string, NearCache<Cacheable>>()
  readonly #maps = new Map<string, SharedMap<unknown>>()
  readonly #topics = new Map<string, Topic<unknown>>()
  readonly #reliableTopics = new Map<string, ReliableTopic<unknown>>()
  readonly #counters = new Map<string, Counter>()
  #sessions: Sessions | null = null
  readonly #machine: Machine<ClusterState>
  #closing: Promise<void> | null = null
  #health: Health | null = null

  /** @internal use `createCluster` */
  constructor(parts: { options: ResolvedOptions; log: Logger; events: Events; db: Db; bus: Bus; members: Membership; embedded: EmbeddedPostgres | null }) {
    this.options = parts.options
    this.log = parts.log
    this.#events = parts.events
    this.#db = parts.db
    this.bus = parts.bus
    this.members = parts.members
    this.#embedded = parts.embedded
    this.#machine = new Machine('cluster', clusterEnteredFrom, 'starting', (from, to) => this.#events.emit('cluster:state:change', { from, to }))
    // Isolation is membership's to decide; the cluster state follows it.
    this.#events.on('member:self:isolated', () => {
      if (this.#machine.state === 'up') this.setState('isolated')
    })
    this.#events.on('member:self:rejoined', () => {
      if (this.#machine.state === 'isolated') this.setState('up')
    })
  }

  /**
   * Cluster-wide fenced locks: `acquire(name, {mode, waitMs, signal, ttlMs})`, `tryAcquire`,
   * `withLock`, and path locks with `path(path, mode)`. Not reentrant. See docs/locks.md.
   */
  /**
   * Shared configuration, versioned in PostgreSQL: `get(key)`, `snapshot()`, `set`, `push`,
   * `history`, `rollback`, and the event `config:changed`. Every instance runs the same version
   * within about a second of a change. See docs/config.md.
   */
  get config(): Config {
    return this.#part('config')
  }

  get locks(): Locks {
    return this.#part('locks')
  }
  /**
   * The durable job queue and cron: `define(name, handler, opts)`, `enqueue(name, payload, {runAt,
   * delayMs, key, priority})`, `enqueueMany`, `cancel`, `retry`, `get`, `cron(name, spec, handler,
   * opts)`. A job runs on one live instance; a dead claimer's jobs run again elsewhere at once. See docs/jobs.md.
   */
  get jobs(): Jobs {
    return this.#part('jobs')
  }
  /**
   * STOMP 1.2 over WebSocket spanning every instance: `attach(httpServer, {authenticate, authorize})`,
   * `publish('/topic/…', body)`, `sendToUser(user, '/user/queue/…', body)`, `handle('/app/…', fn)`,
   * `presence()`. See docs/realtime.md.
   */
  get realtime(): Realtime {
    return this.#part('realtime')
  }
  /**
   * Shared files under option `files.root` (the shared mount): `write(path, data | stream)` atomic
   * under a path lock, `read`, `createReadStream`, `stat`, `list`, `move`, `remove(path, {recursive})`,
   * `area('uploads')`. See docs/files.md.
   */
  get files(): Files {
    return this.#part('files')
  }
  /**
   * Signed RPC between instances: `handle(method, fn)`, `call(instanceId, method, payload)`,
   * `broadcast(method, payload)` → `{results, errors, missing}`; serve it with `attach(server)`,
   * `handler` or `fastify`. See docs/rpc.md.
   */
  get rpc(): Rpc {
    return this.#part('rpc')
  }
  /**
   * Prometheus metrics of this instance (membership, bus, locks, jobs, caches, realtime, HTTP):
   * `text()`, `handler(req, res)` to mount at /metrics, `instrument(server)` to count HTTP requests,
   * `registry` for your own metrics. See docs/dashboard.md.
   */
  get metrics(): Metrics {
    return this.#part('metrics')
  }

  get state(): ClusterState {
    return this.#machine.state
  }

  get instanceId(): string {
    return this.options.instanceId
  }

  /** The URL of the database this cluster runs on (password included; do not log it). */
  get databaseUrl(): string {
    return this.#db.url
  }

  /** @internal the database handle, for subsystems */
  get db(): Db {
    return this.#db
  }

  on<E extends EventName>(event: E, listener: Listener<E>): () => void {
    return this.#events.on(event, listener)
  }

  once<E extends EventName>(event: E, listener: Listener<E>): () => void {
    return this.#events.once(event, listener)
  }

  off<E extends EventName>(event: E, listener: Listener<E>): void {
    this.#events.off(event, listener)
  }

  /** @internal */
  emit<E extends EventName>(event: E, payload: ClusterEvents[E]): void {
    this.#events.emit(event, payload)
  }

  /** @internal moves along `clusterEnteredFrom`; anything else throws `CHORUS_ERR_INTERNAL_TRANSITION` */
  setState(next: ClusterState): void {
    this.#machine.to(next)
  }

  /**
   * Liveness and readiness: `live()`, `ready()` as data, and `handler` (Node http / Express) or
   * `fastify(app)` answering `/health/live` and `/health/ready`. See docs/operations.md.
   */
  get health(): Health {
    this.#health ??= new Health({
      instanceId: this.instanceId,
      failAfterMs: this.options.failAfterMs,
      state: () => this.#machine.state,
      sinceContactMs: () => this.members.sinceContactMs,
    })
    return this.#health
  }

  /**
   * A near cache: local LRU on this instance, invalidated on every instance by `set`/`delete`/`clear`.
   * The same name returns the same cache; options apply when it is first created.
   */
  cache<T extends Cacheable>(name: string, opts: NearCacheOptions<T> = {}): NearCache<T> {
    const create = () => new NearCache<T>(name, opts, { bus: this.bus, events: this.#events }) as unknown as NearCache<Cacheable>
    return this.#named('cache', this.#caches, name, create) as unknown as NearCache<T>
  }

  /** A durable shared map in PostgreSQL (versioned entries, TTL, compare-and-set, counters). */
  map<T = unknown>(name: string, opts: MapOptions<T> = {}): SharedMap<T> {
    const create = () => new SharedMap<T>(name, opts, { sql: this.#db.sql, schema: this.#db.schema, bus: this.bus }) as SharedMap<unknown>
    return this.#named('map', this.#maps, name, create) as SharedMap<T>
  }

  /** A fire-and-forget topic across every instance. */
  topic<T = unknown>(name: string, opts: { codec?: Codec<T>; maxMessageBytes?: number } = {}): Topic<T> {
    const create = () => new Topic<T>(name, opts, { bus: this.bus, events: this.#events, maxPayloadBytes: this.options.bus.maxPayloadBytes }) as Topic<unknown>
    return this.#named('topic', this.#topics, name, create) as Topic<T>
  }

  /**
   * A hot counter: exact totals for many writers on one key (`add(key, by)`, `get(key)`), sharded
   * per instance and written in batches, so a busy key does not serialise every writer on one row
   * lock as `map.increment` does. `add` resolves once its increment is committed. See docs/state.md.
   */
  counter(name: string, opts: CounterOptions = {}): Counter {
    return this.#named('counter', this.#counters, name, () => new Counter(name, opts, { sql: this.#db.sql, schema: this.#db.schema, shard: this.instanceId }))
  }

  /**
   * A durable, ordered log in PostgreSQL: `publish` returns the message's offset; `subscribe(handler,
   * {from, group})` delivers in order, resumes a group after its committed offset. See docs/state.md.
   * The same name returns the same topic; options apply when it is first created.
   */
  reliableTopic<T = unknown>(name: string, opts: ReliableTopicOptions<T> = {}): ReliableTopic<T> {
    const deps = { sql: this.#db.sql, schema: this.#db.schema, bus: this.bus, events: this.#events, members: this.members, log: this.log, instanceId: this.instanceId }
    return this.#named('reliable topic', this.#reliableTopics, name, () => new ReliableTopic<T>(name, opts, deps) as ReliableTopic<unknown>) as ReliableTopic<T>
  }

  /** @internal the near caches created on this instance, for metrics and the dashboard */
  nearCaches(): Iterable<readonly [string, NearCache<Cacheable>]> {
    return this.#caches.entries()
  }

  /** Session stores for express-session and @fastify/session: `cluster.sessions.store(opts)`. See docs/state.md. */
  get sessions(): Sessions {
    this.#sessions ??= new Sessions({ sql: this.#db.sql, schema: this.#db.schema })
    return this.#sessions
  }

  /** The structure `name` of one kind: the same name returns the same object; options apply when it is first created. */
  #named<V>(kind: string, registry: Map<string, V>, name: string, create: () => V): V {
    checkName(kind, name)
    this.#assertOpen(kind)
    let value = registry.get(name)
    if (value === undefined) {
      value = create()
      registry.set(name, value)
    }
    return value
  }

  #assertOpen(what: string): void {
    if (this.#machine.state === 'stopped') throw new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', ['stopped', what])
  }

  /**
   * Runs `start(signal)` on exactly one live instance (with one of `roles`). When that instance
   * dies, drains or isolates itself, its signal aborts first and another instance takes over
   * within about `failAfterMs`. See docs/jobs.md.
   */
  singleton(name: string, opts: SingletonOptions): Singleton {
    return this.#part('singletons').register(name, opts)
  }

  /** @internal registers and starts a subsystem (see src/subsystem.ts); `as` names the getter that serves it */
  async addSubsystem<S extends Subsystem>(subsystem: S, as?: { [K in keyof Wired]: Wired[K] extends S ? K : never }[keyof Wired]): Promise<S> {
    this.#subsystems.push(subsystem)
    await subsystem.start?.()
    if (as) (this.#wired as Record<string, Subsystem>)[as] = subsystem
    return subsystem
  }

  /** @internal a subsystem if it is wired yet, for observers that may run during start-up */
  wired<K extends keyof Wired>(key: K): Wired[K] | undefined {
    return this.#wired[key]
  }

  #part<K extends keyof Wired>(key: K): Wired[K] {
    const part = this.#wired[key]
    if (!part) throw new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', [this.#machine.state, key])
    return part
  }

  /** @internal what subsystems are built from */
  get deps(): SubsystemDeps {
    return { options: this.options, log: this.log, events: this.#events, db: this.#db, bus: this.bus, members: this.members }
  }

  /** Stops taking new work (peers and the balancer see `draining`); stays a member. */
  async drain(): Promise<void> {
    if (this.#machine.state !== 'up' && this.#machine.state !== 'isolated') return
    this.setState('draining')
    await this.members.drain()
    for (const s of this.#subsystems) {
      await s.drain?.().catch((err: unknown) => this.log.warn({ err: toError(err), subsystem: s.name }, 'drain failed'))
    }
  }

  /**
   * Drains, leaves, and closes every connection. Safe to call more than once. Finishes within
   * option `closeTimeoutMs` whatever the database does: past it, the remaining steps are abandoned,
   * connections are cut, and the log says what was not done (peers then see this instance expire,
   * as after a kill).
   */
  close(): Promise<void> {
    this.#closing ??= this.#closeWithin(this.options.closeTimeoutMs)
    return this.#closing
  }

  async #closeWithin(deadlineMs: number): Promise<void> {
    const progress = { step: 'drain', done: [] as string[] }
    let timer: NodeJS.Timeout | undefined
    const expired = new Promise<'expired'>((resolve) => {
      timer = setTimeout(resolve, deadlineMs, 'expired')
    })
    try {
      const outcome = await Promise.race([this.#close(progress).then(() => 'done' as const), expired])
      if (outcome === 'expired') {
        this.log.warn(
          { deadlineMs, step: progress.step, done: progress.done },
          `close did not finish within ${deadlineMs} ms (stuck at: ${progress.step}); cutting the connections — peers will see this instance expire`,
        )
        this.members.abandon()
        await this.#db.close(0)
        await this.#embedded?.stop().catch((err: unknown) => this.log.warn({ err: toError(err) }, 'the embedded PostgreSQL did not stop'))
      }
    } finally {
      clearTimeout(timer)
      if (this.#machine.state !== 'stopped') this.setState('stopped')
      this.log.info('left the cluster')
      this.log.flush?.()
    }
  }

  async #close(progress: { step: string; done: string[] }): Promise<void> {
    const step = async (name: string, fn: () => Promise<unknown> | unknown) => {
      progress.step = name
      await fn()
      progress.done.push(name)
    }
    if (this.#machine.state === 'up' || this.#machine.state === 'isolated') await step('drain', () => this.drain().catch((err) => this.log.warn({ err: toError(err) }, 'drain failed')))
    for (const s of [...this.#subsystems].reverse()) {
      await step(`close ${s.name}`, () => s.close().catch((err: unknown) => this.log.warn({ err: toError(err), subsystem: s.name }, 'close failed')))
    }
    for (const c of this.#caches.values()) c.close()
    for (const c of this.#counters.values()) await step(`flush counter ${c.name}`, () => c.close().catch((err: unknown) => this.log.warn({ err: toError(err), counter: c.name }, 'pending counter increments were not written')))
    for (const t of this.#reliableTopics.values()) {
      await step(`close reliable topic ${t.name}`, () => t.close().catch((err: unknown) => this.log.warn({ err: toError(err), topic: t.name }, 'close failed')))
    }
    await step('leave', () => this.members.leave())
    await step('close bus', () => this.bus.close())
    await step('close connections', () => this.#db.close())
    await step('stop embedded PostgreSQL', () => this.#embedded?.stop())
  }
}
