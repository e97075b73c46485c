/**
 * `cluster.config`: the cluster's shared settings, versioned in PostgreSQL. Sources by precedence
 * (lowest first): the pushed files (`application`, `application-{profile}`, `{app}`,
 * `{app}-{profile}`), the runtime layer (`set`), this instance's `CHORUS_CONFIG_<KEY>` variables.
 * Guarantees: a version every registered schema refuses is never stored; an instance runs a new
 * version within a bus round trip of its commit, and when a notice may have been lost (bus gap,
 * reconnect, rejoin) or missed (the poll finds a newer number) it reads the latest again — it
 * never keeps running an older version without saying so in its log. See docs/config.md.
 */
import type { Logger } from 'pino'
import { channels } from '../bus/channels.js'
import { ChorusError, toError } from '../errors.js'
import type { Subsystem, SubsystemDeps } from '../subsystem.js'
import { Rerun } from '../util/rerun.js'
import { SecretBox } from './crypto.js'
import { pushed, withRemoved, withSet } from './edits.js'
import { at, changedKeys, envLayer, masked, nest, schemaKeys, secretMatcher, type Layer } from './keys.js'
import { resolveConfigOptions, type ConfigOptions, type ResolvedConfigOptions } from './options.js'
import { loadDirectory, parseFiles, type Doc, type View } from './sources.js'
import { ConfigStore, EMPTY, type HistoryEntry, type WriteRequest, type WriteResult } from './store.js'
import { check, effective, refusal, toJsonSchema, validate } from './validate.js'

export interface SetOptions {
  /** Compare-and-set: refused with `CHORUS_ERR_CONFIG_CONFLICT` unless the configuration is at this version. */
  expectedVersion?: number
  /** Keep this key secret (encrypted at rest, masked on display) from now on. */
  secret?: boolean
  /** Recorded in the history. Default `instance:<instanceId>`. */
  author?: string
}

export type WriteOptions = Omit<SetOptions, 'secret'>

export type { ConfigOptions } from './options.js'
export type { HistoryEntry as ConfigHistoryEntry, WriteResult as ConfigWriteResult } from './store.js'
export type { View as ConfigView } from './sources.js'

const HISTORY_LIMIT = 1000

export class Config<T = Record<string, unknown>> implements Subsystem {
  readonly name = 'config'
  readonly #deps: SubsystemDeps
  readonly #opts: ResolvedConfigOptions
  readonly #env: NodeJS.ProcessEnv
  readonly #log: Logger
  readonly #store: ConfigStore
  readonly #view: View
  readonly #jsonSchema: unknown
  readonly #patterns: (key: string) => boolean
  readonly #refresh: Rerun
  #doc: Doc = EMPTY
  #version = 0
  /** The newest version this instance refused to run (its schema or its secret could not take it). */
  #refused = 0
  #layer: Layer = {}
  #value: unknown = Object.freeze({})
  /** The nested effective configuration before the schema parsed it: keys the schema does not describe. */
  #raw: unknown = Object.freeze({})
  #offs: (() => void)[] = []
  #timer: NodeJS.Timeout | null = null
  #closed = false

  constructor(deps: SubsystemDeps, options: ConfigOptions = {}, internals: { env?: NodeJS.ProcessEnv } = {}) {
    this.#deps = deps
    this.#opts = resolveConfigOptions(options, internals.env)
    this.#env = internals.env ?? process.env
    this.#log = deps.log.child({ subsystem: 'config' })
    this.#store = new ConfigStore({ sql: deps.db.sql, schema: deps.db.schema, box: new SecretBox(deps.options.secret) })
    this.#view = { app: this.#opts.app, profiles: this.#opts.profiles }
    this.#jsonSchema = this.#opts.schema ? toJsonSchema(this.#opts.schema) : null
    this.#patterns = secretMatcher(this.#opts.secretKeys)
    this.#refresh = new Rerun(
      () => this.#catchUp(),
      (err) => this.#log.warn({ err: toError(err) }, 'could not read the latest configuration; will retry'),
    )
  }

  /** The version this instance runs (0: none was ever stored). */
  get version(): number {
    return this.#version
  }

  /** The app and profiles whose sources apply here. */
  get view(): View {
    return this.#view
  }

  /**
   * The value at a dotted key (a leaf or a subtree), as the schema parsed it; secrets in the clear.
   * A key the schema does not describe (zod strips it from the parsed object) is read as stored.
   */
  get<V = unknown>(key: string): V | undefined {
    return (at(this.#value, key) ?? at(this.#raw, key)) as V | undefined
  }

  /** The whole configuration this instance runs, nested and frozen (the schema's output when there is one). */
  snapshot(): T {
    return this.#value as T
  }

  /** The flat effective configuration with secret values masked: for logs, pages and support bundles. */
  snapshotForDisplay(): Record<string, unknown> {
    return masked(this.#layer, (k) => this.#isSecret(k))
  }

  /** Sets `key` in the runtime layer (above the files) for every instance; resolves once this instance runs it. */
  async set(key: string, value: unknown, opts: SetOptions = {}): Promise<number> {
    const r = await this.#write({ source: 'set', ...writeOpts(opts), next: (cur) => withSet(cur, key, value, opts.secret === true) }, opts.author)
    return r.version
  }

  /** Removes `key` (and its subtree) from the runtime layer, so the files' value applies again. */
  async delete(key: string, opts: WriteOptions = {}): Promise<number> {
    const r = await this.#write({ source: 'delete', ...writeOpts(opts), next: (cur) => withRemoved(cur, key) }, opts.author)
    return r.version
  }

  /**
   * Replaces every file source with the files of `dir` (or `{ 'application.yml': '…' }` contents);
   * the runtime layer stays. Resolves with the version that holds them (unchanged when equal).
   */
  async push(dir: string | Readonly<Record<string, string>>, opts: WriteOptions = {}): Promise<WriteResult> {
    const files = typeof dir === 'string' ? await loadDirectory(dir) : parseFiles(dir)
    return this.#write({ source: 'push', ...writeOpts(opts), next: (cur) => pushed(cur, files) }, opts.author)
  }

  /** Stores a new version equal to `version` (files, runtime layer and secrets as they were). */
  async rollback(version: number, opts: WriteOptions = {}): Promise<number> {
    if (!Number.isSafeInteger(version) || version < 1) throw new ChorusError('CHORUS_ERR_CONFIG_VERSION_NOT_FOUND', [String(version)], { details: { version } })
    const r = await this.#write(
      {
        source: 'rollback',
        ...writeOpts(opts),
        next: async () => {
          const row = await this.#store.read(version)
          if (!row) throw new ChorusError('CHORUS_ERR_CONFIG_VERSION_NOT_FOUND', [version], { details: { version } })
          return this.#store.open(row)
        },
      },
      opts.author,
    )
    return r.version
  }

  /** Versions, newest first: who, when, which keys changed. */
  history(opts: { limit?: number } = {}): Promise<HistoryEntry[]> {
    const limit = opts.limit ?? 50
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > HISTORY_LIMIT) {
      throw new ChorusError('CHORUS_ERR_CONFIG_OPTIONS_INVALID', ['history.limit', `must be an integer from 1 to ${HISTORY_LIMIT}`], { details: { option: 'limit' } })
    }
    return this.#store.history(limit)
  }

  /** Reads the latest version now and runs it (what a bus gap or the poll does on their own). */
  refresh(): Promise<void> {
    return this.#refresh.run()
  }

  async start(): Promise<void> {
    await this.#store.registerSchema(this.#view, this.#jsonSchema, this.#opts.secretKeys, this.#deps.options.instanceId)
    const row = await this.#store.read()
    // At start a version this instance cannot run is an error, not a warning: it has nothing older to keep.
    this.#apply(row?.version ?? 0, this.#store.open(row), true)
    const { bus, events } = this.#deps
    this.#offs.push(
      // A notice says only "version v exists"; the row is read from the database, so a malformed
      // notice costs one read at most.
      bus.subscribe(channels.config, (data) => {
        const v = Number(/^\{"v":(\d{1,15})\}$/.exec(data)?.[1] ?? Number.POSITIVE_INFINITY)
        if (v > Math.max(this.#version, this.#refused)) void this.refresh()
      }),
      events.on('bus:gap', () => void this.refresh()),
      events.on('member:self:rejoined', () => void this.refresh()),
    )
    this.#timer = setInterval(() => void this.#poll(), this.#opts.pollMs)
    this.#timer.unref()
    // A version stored between the first read and the subscription is found here.
    await this.refresh()
  }

  async close(): Promise<void> {
    this.#closed = true
    if (this.#timer) clearInterval(this.#timer)
    for (const off of this.#offs.splice(0)) off()
    const self = this.#deps.members.self
    await this.#store.forget(self.instanceId, self.epoch).catch(() => undefined)
  }

  async #poll(): Promise<void> {
    if (this.#closed || this.#refresh.running) return
    try {
      if ((await this.#store.latest()) > Math.max(this.#version, this.#refused)) await this.refresh()
    } catch (err) {
      this.#log.debug({ err: toError(err) }, 'configuration poll failed')
    }
  }

  async #catchUp(): Promise<void> {
    if (this.#closed) return
    const row = await this.#store.read()
    if (!row || row.version <= Math.max(this.#version, this.#refused)) return
    let doc: Doc
    try {
      doc = this.#store.open(row)
    } catch (err) {
      return this.#refuse(row.version, err)
    }
    this.#apply(row.version, doc, false)
  }

  #envLayer(doc: Doc): Layer {
    return envLayer(effective(doc, this.#view), schemaKeys(this.#jsonSchema), this.#env)
  }

  #apply(version: number, doc: Doc, starting: boolean): void {
    const layer = effective(doc, this.#view, this.#envLayer(doc))
    let value: unknown
    if (this.#opts.schema) {
      const r = check(this.#opts.schema, layer, this.#view)
      if (!r.ok) {
        if (starting) throw refusal(r.issues)
        return this.#refuse(version, refusal(r.issues))
      }
      value = r.value
    } else value = nest(layer)
    const changed = changedKeys(this.#layer, layer)
    const from = this.#version
    this.#doc = doc
    this.#layer = layer
    this.#value = deepFreeze(structuredClone(value))
    this.#raw = this.#opts.schema ? deepFreeze(nest(layer)) : this.#value
    this.#version = version
    void this.#report(null)
    if (version !== from || starting) {
      this.#log.info({ version, from, changed }, starting ? 'running configuration version' : 'configuration changed')
      if (!starting) this.#deps.events.emit('config:changed', { version, changed })
    }
  }

  #refuse(version: number, err: unknown): void {
    if (version <= this.#refused) return
    this.#refused = version
    const e = toError(err)
    this.#log.warn({ version, running: this.#version, code: (e as ChorusError).code, err: e }, `configuration version ${version} cannot run on this instance; it keeps version ${this.#version}`)
    void this.#report(version)
  }

  async #report(refused: number | null): Promise<void> {
    const self = this.#deps.members.self
    await this.#store.reportRunning(self.instanceId, self.epoch, this.#view, this.#version, refused ?? (this.#refused > this.#version ? this.#refused : null)).catch((err: unknown) => {
      this.#log.debug({ err: toError(err) }, 'could not record the running configuration version')
    })
  }

  #isSecret(key: string): boolean {
    return this.#doc.secrets.has(key) || this.#patterns(key)
  }

  async #write(req: Omit<WriteRequest, 'validate' | 'author'>, author: string | undefined): Promise<WriteResult> {
    if (this.#closed) throw new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', ['closing', 'changing the configuration'])
    const result = await this.#store.write({
      ...req,
      author: author ?? `instance:${this.#deps.options.instanceId}`,
      secretKeys: this.#opts.secretKeys,
      validate: (doc, registered) => validate(doc, this.#opts.schema ? { view: this.#view, schema: this.#opts.schema, env: this.#envLayer(doc) } : null, registered),
    })
    if (result.stored) {
      this.#log.info({ version: result.version, changed: result.changed, source: req.source }, 'stored configuration version')
      this.#deps.bus.notify(channels.config, JSON.stringify({ v: result.version }))
      await this.refresh()
    }
    return result
  }
}

function writeOpts(opts: WriteOptions): { expectedVersion?: number } {
  return opts.expectedVersion === undefined ? {} : { expectedVersion: checkVersion(opts.expectedVersion) }
}

function checkVersion(v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new ChorusError('CHORUS_ERR_CONFIG_KEY_INVALID', [`expectedVersion ${String(v)}`, 'a version is an integer ≥ 0'], { details: { expectedVersion: v } })
  }
  return v
}

function deepFreeze<V>(v: V): V {
  if (v && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v)
    for (const child of Object.values(v)) deepFreeze(child)
  }
  return v
}
