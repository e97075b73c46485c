/**
 * A session store in PostgreSQL for express-session and @fastify/session (both call `get`, `set`,
 * `destroy` and `touch` with callbacks). Expiry is on database time; every write bumps the row's
 * version; a write based on an older version merges the keys its request changed onto the current
 * row (see merge.ts and docs/state.md), so two instances writing different keys of one session at
 * once both keep their key. A session destroyed after a request loaded it stays destroyed.
 */
import { EventEmitter } from 'node:events'
import type { Sql } from '../db/connect.js'
import { schemaName, type SchemaName } from '../db/schema.js'
import { ChorusError } from '../errors.js'
import { loadPeer } from '../util/peer.js'
import { checkName } from '../state/codec.js'
import { META_KEY, changesOf, encodeValues, joinValues, merge, metaOf, parseData, type SessionMeta, type Values } from './merge.js'

export interface SessionStoreOptions {
  /** Keeps apart the sessions of applications sharing one database. Default `'default'`. */
  name?: string
  /** Lifetime of a session whose cookie has neither `maxAge` nor `expires`. Default: 24 hours. */
  ttlMs?: number
  /** Largest session, in bytes of the JSON of its keys (cookie excluded). Default 64 KiB. */
  maxBytes?: number
  /**
   * The express-session module, whose `Store` methods (`createSession`, `load`, `regenerate`) this
   * store borrows. Default: `express-session`, loaded when first needed.
   */
  session?: { Store: unknown }
}

/** A framework's session object: its keys, a `cookie`, and (once loaded from here) the hidden field. */
export type SessionObject = Record<string, unknown> & { cookie?: unknown }

/*
 * The framework-facing methods are typed to be assignable to express-session's `Store` and to
 * @fastify/session's `SessionStore` under `strict`. Their session types (`SessionData`, `Session`)
 * are interfaces each application augments and this package cannot name, so a session comes in as
 * `object` (every interface is one) and goes back to the framework untyped (`any`: the only type
 * assignable to the application's own session type).
 */
type Callback = (err?: any) => void
type ValueCallback<T> = (err: any, value?: T) => void
type FrameworkSession = any

interface ExpressStoreMethods {
  createSession(this: unknown, req: unknown, sess: unknown): unknown
  load(this: unknown, sid: string, fn: (err?: unknown, sess?: unknown) => void): void
  regenerate(this: unknown, req: unknown, fn: (err?: unknown) => void): void
}

const MAX_SID_BYTES = 512

export class SessionStore extends EventEmitter {
  readonly name: string
  readonly #sql: Sql
  readonly #s: SchemaName
  readonly #ttlMs: number
  readonly #maxBytes: number
  readonly #session: { Store: unknown } | undefined
  #express: ExpressStoreMethods | null = null

  /** @internal use `cluster.sessions.store(opts)` */
  constructor(opts: SessionStoreOptions, deps: { sql: Sql; schema: string }) {
    super()
    const name = opts.name ?? 'default'
    checkName('session store', name)
    this.name = name
    this.#sql = deps.sql
    this.#s = schemaName(deps.sql, deps.schema)
    this.#ttlMs = positive('ttlMs', opts.ttlMs ?? 24 * 60 * 60 * 1000)
    this.#maxBytes = positive('maxBytes', opts.maxBytes ?? 64 * 1024)
    this.#session = opts.session
  }

  // ---- the callback interface both frameworks call ---------------------------------------------

  get(sid: string, cb: ValueCallback<FrameworkSession | null>): void {
    settle(this.read(sid), cb)
  }

  set(sid: string, sess: object, cb?: Callback): void {
    settle(this.write(sid, sess as SessionObject), cb)
  }

  destroy(sid: string, cb?: Callback): void {
    settle(this.remove(sid), cb)
  }

  touch(sid: string, sess: object, cb?: Callback): void {
    settle(this.extend(sid, sess as SessionObject), cb)
  }

  /** Live sessions in this store (express-session's optional `length`). */
  length(cb: ValueCallback<number>): void {
    settle(this.count(), cb)
  }

  /** Deletes every session of this store (express-session's optional `clear`). */
  clear(cb?: Callback): void {
    settle(this.removeAll(), cb)
  }

  // ---- express-session's Store base methods, borrowed from the installed express-session --------

  createSession(req: unknown, sess: object): FrameworkSession {
    return this.#expressMethods().createSession.call(this, req, sess)
  }

  load(sid: string, fn: ValueCallback<FrameworkSession>): void {
    this.#expressMethods().load.call(this, sid, fn)
  }

  regenerate(req: unknown, fn: Callback): void {
    this.#expressMethods().regenerate.call(this, req, fn)
  }

  // ---- the same operations as promises ----------------------------------------------------------

  /** The live session, with the hidden field that lets a later write merge; null when absent or expired. */
  async read(sid: string): Promise<SessionObject | null> {
    if (!validSid(sid)) return null
    const [row] = await this.#sql<{ data: string; cookie: string | null; version: string }[]>`
      select data, cookie, version from ${this.#s}.sessions where store = ${this.name} and sid = ${sid} and expires_at > now()`
    if (!row) return null
    const { object, hashes } = parseData(row.data)
    const sess: SessionObject = object
    if (row.cookie !== null) sess.cookie = JSON.parse(row.cookie) as unknown
    const meta: SessionMeta = { v: Number(row.version), h: hashes }
    sess[META_KEY] = meta
    return sess
  }

  /**
   * Writes the session. When the row moved on since this session was loaded, only the keys this
   * writer changed or removed are applied onto the current row. A session that was destroyed (or
   * expired) after it was loaded is not brought back. Oversized or unencodable sessions are refused
   * with a typed error and nothing is written.
   */
  async write(sid: string, sess: SessionObject): Promise<void> {
    checkSid(sid)
    if (!sess || typeof sess !== 'object') throw new ChorusError('CHORUS_ERR_STATE_VALUE_NOT_SERIALIZABLE', ['a session must be an object'])
    const values = encodeValues(sess)
    const data = this.#checkSize(joinValues(values))
    const cookie = cookieText(sess.cookie)
    const ttl = this.#ttlOf(sess)
    const meta = metaOf(sess)
    const sql = this.#sql
    const expires = sql`now() + ${ttl} * interval '1 millisecond'`
    // The common case, one statement: nobody wrote since this session was loaded (or it is new).
    const rows = meta
      ? await sql`
          update ${this.#s}.sessions set data = ${data}, cookie = ${cookie}, version = version + 1, expires_at = ${expires}, updated_at = now()
          where store = ${this.name} and sid = ${sid} and version = ${meta.v} and expires_at > now()
          returning 1`
      : await sql`
          insert into ${this.#s}.sessions (store, sid, data, cookie, expires_at) values (${this.name}, ${sid}, ${data}, ${cookie}, ${expires})
          on conflict (store, sid) do nothing
          returning 1`
    if (rows.length > 0) return
    await this.#merge(sid, values, meta, cookie, ttl)
  }

  async #merge(sid: string, values: Values, meta: SessionMeta | null, cookie: string | null, ttl: number): Promise<void> {
    const changes = changesOf(values, meta)
    await this.#sql.begin(async (tx) => {
      const [row] = await tx<{ data: string; live: boolean }[]>`
        select data, expires_at > now() as live from ${this.#s}.sessions where store = ${this.name} and sid = ${sid} for update`
      const expires = tx`now() + ${ttl} * interval '1 millisecond'`
      if (!row || !row.live) {
        // Destroyed or expired since this request loaded it: it stays ended.
        if (meta) return
        const data = joinValues(values)
        await tx`
          insert into ${this.#s}.sessions (store, sid, data, cookie, expires_at) values (${this.name}, ${sid}, ${data}, ${cookie}, ${expires})
          on conflict (store, sid) do update set data = excluded.data, cookie = excluded.cookie, version = sessions.version + 1,
            expires_at = excluded.expires_at, updated_at = now()`
        return
      }
      const data = this.#checkSize(joinValues(merge(parseData(row.data).values, changes)))
      await tx`
        update ${this.#s}.sessions set data = ${data}, cookie = ${cookie}, version = version + 1, expires_at = ${expires}, updated_at = now()
        where store = ${this.name} and sid = ${sid}`
    })
  }

  async remove(sid: string): Promise<void> {
    checkSid(sid)
    await this.#sql`delete from ${this.#s}.sessions where store = ${this.name} and sid = ${sid}`
  }

  /** Extends a live session's lifetime (and keeps its cookie); does not change its data or version. */
  async extend(sid: string, sess: SessionObject): Promise<void> {
    checkSid(sid)
    const ttl = this.#ttlOf(sess)
    await this.#sql`
      update ${this.#s}.sessions set expires_at = now() + ${ttl} * interval '1 millisecond', cookie = coalesce(${cookieText(sess?.cookie)}, cookie)
      where store = ${this.name} and sid = ${sid} and expires_at > now()`
  }

  async count(): Promise<number> {
    const [row] = await this.#sql<{ n: number }[]>`select count(*)::int as n from ${this.#s}.sessions where store = ${this.name} and expires_at > now()`
    return row?.n ?? 0
  }

  async removeAll(): Promise<void> {
    await this.#sql`delete from ${this.#s}.sessions where store = ${this.name}`
  }

  #checkSize(data: string): string {
    const bytes = Buffer.byteLength(data)
    if (bytes > this.#maxBytes) throw new ChorusError('CHORUS_ERR_SESSION_TOO_LARGE', [bytes, this.#maxBytes], { details: { bytes, limit: this.#maxBytes } })
    return data
  }

  /** The cookie's remaining lifetime (`maxAge`, else `expires`), else the store's default. */
  #ttlOf(sess: SessionObject | undefined): number {
    const c = sess?.cookie as { maxAge?: unknown; expires?: unknown } | undefined
    let ms: number | null = null
    if (c && typeof c === 'object') {
      if (typeof c.maxAge === 'number' && Number.isFinite(c.maxAge)) ms = c.maxAge
      else if (c.expires instanceof Date || typeof c.expires === 'string') {
        const at = new Date(c.expires).getTime()
        if (Number.isFinite(at)) ms = at - Date.now()
      }
    }
    return Math.min(2_000_000_000, Math.max(1, Math.floor(ms ?? this.#ttlMs)))
  }

  #expressMethods(): ExpressStoreMethods {
    if (this.#express) return this.#express
    let mod = this.#session as { Store?: { prototype?: ExpressStoreMethods } } | undefined
    if (!mod) {
      const loaded = loadPeer('express-session')
      if ('error' in loaded) throw new ChorusError('CHORUS_ERR_SESSION_FRAMEWORK_MISSING', [loaded.error])
      mod = loaded.module as typeof mod
    }
    const proto = mod?.Store?.prototype
    if (!proto || typeof proto.createSession !== 'function' || typeof proto.load !== 'function' || typeof proto.regenerate !== 'function') {
      throw new ChorusError('CHORUS_ERR_SESSION_FRAMEWORK_MISSING', ['the module given has no Store with createSession, load and regenerate'])
    }
    this.#express = proto
    return proto
  }
}

/** Calls a framework callback with the promise's outcome, outside the promise chain (so its throws stay its own). */
function settle<T>(p: Promise<T>, cb: ValueCallback<T> | undefined): void {
  p.then(
    (value) => cb && process.nextTick(cb, null, value),
    (err: unknown) => (cb ? process.nextTick(cb, err) : undefined),
  )
}

function validSid(sid: unknown): sid is string {
  return typeof sid === 'string' && sid.length > 0 && !sid.includes('\u0000') && Buffer.byteLength(sid) <= MAX_SID_BYTES
}

function checkSid(sid: unknown): asserts sid is string {
  if (!validSid(sid)) throw new ChorusError('CHORUS_ERR_SESSION_ID_INVALID', [JSON.stringify(typeof sid === 'string' ? sid.slice(0, 50) : sid), MAX_SID_BYTES])
}

function cookieText(cookie: unknown): string | null {
  if (cookie === undefined || cookie === null) return null
  try {
    return JSON.stringify(cookie) ?? null
  } catch {
    return null
  }
}

function positive(option: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', [`sessions.store ${option}`, 'must be a positive integer'], { details: { option } })
  }
  return value
}
