/**
 * The dashboard's Config panel and its Spring Cloud Config Server–compatible endpoint, mountable
 * with one call: `configRoutes(deps)` returns a handler that answers its own paths and returns
 * false for any other. Reads (`GET /api/config`, `/api/config/history`, `/config/{app}/{profile}[/{label}]`)
 * take any API credential (session, bearer, Basic); a rollback (`POST /api/config/rollback`) and a
 * set (`POST /api/config/set`, the runtime layer as `chorus config set`) are actions: a session must
 * come from this origin with its X-CSRF-Token, or a bearer token is used. A change is checked
 * against every registered schema before it is stored, and announced on the bus.
 * The panel's values are always masked; the Spring endpoint serves secrets in clear only when the
 * dashboard was given the cluster secret (a config client needs them), masked otherwise.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import type { Bus } from '../bus/bus.js'
import { channels } from '../bus/channels.js'
import { SecretBox } from '../config/crypto.js'
import { differences, entries, springEnvironment } from '../config/display.js'
import { withSet } from '../config/edits.js'
import { viewSources, type Doc, type View } from '../config/sources.js'
import { ConfigStore, type Registered, type Running } from '../config/store.js'
import { validate } from '../config/validate.js'
import type { Sql } from '../db/connect.js'
import { ChorusError, toError } from '../errors.js'
import type { Credential } from './auth.js'
import type { Guard } from './guard.js'
import { decodeSegment, mediaType, notAllowed, parseJson, readBody, sendError, sendJson } from './http.js'

/** How the routes check credentials: the dashboard's own `accessGuard` (./guard.ts). */
export type ConfigGuard = Pick<Guard, 'read' | 'action'>
export { accessGuard } from './guard.js'

export interface ConfigRoutesDeps {
  readonly sql: Sql
  readonly schema: string
  readonly log: Logger
  readonly guard: ConfigGuard
  /** Announces a rollback so instances run it at once (without it they find it by their poll). */
  readonly bus?: Bus
  /** The cluster secret: rollbacks of a configuration with secrets, and clear secrets on the Spring endpoint. Default: none. */
  readonly secret?: string | null
}

const SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$/

export type ConfigRouteHandler = (req: IncomingMessage, res: ServerResponse) => Promise<boolean>

export function configRoutes(deps: ConfigRoutesDeps): ConfigRouteHandler {
  const box = deps.secret ? new SecretBox(deps.secret) : null
  const store = new ConfigStore({ sql: deps.sql, schema: deps.schema, box })
  const log = deps.log.child({ subsystem: 'dashboard' })

  return async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://dashboard.invalid')
    const path = url.pathname
    const parts = path.split('/').slice(1)
    const method = req.method ?? 'GET'
    const get = method === 'GET' || method === 'HEAD'
    const ours = path === '/api/config' || path.startsWith('/api/config/') || (parts[0] === 'config' && parts.length >= 3)
    if (!ours) return false
    try {
      if (parts[0] === 'config') {
        if (!get) throw notAllowed(method, path)
        await deps.guard.read(req)
        await spring(res, parts.slice(1))
      } else if (path === '/api/config/rollback' || path === '/api/config/set') {
        if (method !== 'POST') throw notAllowed(method, path)
        const cred = await deps.guard.action(req)
        const body = await jsonBody(req)
        if (path === '/api/config/set') await set(res, cred, body)
        else await rollback(res, cred, body)
      } else if (path === '/api/config' || path === '/api/config/history') {
        if (!get) throw notAllowed(method, path)
        await deps.guard.read(req)
        if (path === '/api/config') await panel(res, url)
        else await history(res, url)
      } else throw new ChorusError('CHORUS_ERR_DASHBOARD_NOT_FOUND', [path])
    } catch (err) {
      if (!(err instanceof ChorusError)) log.error({ err: toError(err), method, path }, 'dashboard: config request failed')
      const unauthorized = err instanceof ChorusError && err.code === 'CHORUS_ERR_DASHBOARD_UNAUTHORIZED' && parts[0] === 'config'
      sendError(res, err, unauthorized ? { 'www-authenticate': 'Basic realm="chorus", charset="UTF-8"' } : {})
    }
    return true
  }

  /** `GET /api/config?app=&profile=a,b`: the view's values (masked) with their sources, the known views, and what each instance runs. */
  async function panel(res: ServerResponse, url: URL): Promise<void> {
    const view = viewOf(url.searchParams.get('app'), url.searchParams.get('profile'))
    const [row, registered, running] = await Promise.all([store.read(), store.schemas(), store.running()])
    const doc = ConfigStore.masked(row)
    const version = row?.version ?? 0
    sendJson(res, 200, {
      version,
      view,
      entries: entries(doc, view),
      sources: Object.fromEntries(viewSources(view).filter((n) => doc.sources[n]).map((n) => [n, doc.sources[n]])),
      views: knownViews(registered, running),
      instances: running.map((r) => ({ ...r, current: r.version === version })),
    })
  }

  /** `GET /api/config/history?limit=20`: versions newest first, each with its differences from the one before (masked). */
  async function history(res: ServerResponse, url: URL): Promise<void> {
    const limit = Math.min(100, Math.max(1, Number(url.searchParams.get('limit') ?? 20) || 20))
    const list = await store.history(limit)
    const rows = list.length ? await store.range(list.at(-1)!.version - 1, list[0]!.version) : new Map()
    const versions = list.map((h) => ({ ...h, differences: differences(ConfigStore.masked(rows.get(h.version - 1) ?? null), ConfigStore.masked(rows.get(h.version) ?? null)) }))
    sendJson(res, 200, { versions })
  }

  /** `POST /api/config/rollback` `{"version": n, "expectedVersion"?: m}`: a new version equal to `n`. */
  async function rollback(res: ServerResponse, cred: Credential, body: Body): Promise<void> {
    const version = body.version
    if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1) throw new ChorusError('CHORUS_ERR_DASHBOARD_BAD_REQUEST', ['version must be a positive integer'])
    await write(res, cred, body, 'rollback', async () => {
      const row = await store.read(version)
      if (!row) throw new ChorusError('CHORUS_ERR_CONFIG_VERSION_NOT_FOUND', [version], { details: { version } })
      return store.open(row)
    })
  }

  /** `POST /api/config/set` `{"key": "a.b", "value": any JSON, "secret"?: bool, "expectedVersion"?: m}`: the runtime layer, as `chorus config set`. */
  async function set(res: ServerResponse, cred: Credential, body: Body): Promise<void> {
    const { key, value, secret } = body
    if (typeof key !== 'string') throw new ChorusError('CHORUS_ERR_DASHBOARD_BAD_REQUEST', ['key must be a string'])
    if (value === undefined) throw new ChorusError('CHORUS_ERR_DASHBOARD_BAD_REQUEST', ['value is required (any JSON value)'])
    if (secret !== undefined && typeof secret !== 'boolean') throw new ChorusError('CHORUS_ERR_DASHBOARD_BAD_REQUEST', ['secret must be true or false'])
    await write(res, cred, body, 'set', (cur) => withSet(cur, key, value, secret === true))
  }

  /** A new version from `next`, checked against every registered schema and announced so instances run it at once. */
  async function write(res: ServerResponse, cred: Credential, body: Body, source: 'set' | 'rollback', next: (cur: Doc) => Promise<Doc> | Doc): Promise<void> {
    const expected = body.expectedVersion
    if (expected !== undefined && (typeof expected !== 'number' || !Number.isSafeInteger(expected) || expected < 0)) {
      throw new ChorusError('CHORUS_ERR_DASHBOARD_BAD_REQUEST', ['expectedVersion must be an integer ≥ 0'])
    }
    const result = await store.write({
      author: `dashboard:${cred.via === 'bearer' ? `token ${cred.token.name}` : cred.via}`,
      source,
      expectedVersion: expected,
      next,
      validate: (doc, registered) => validate(doc, null, registered),
    })
    if (result.stored) deps.bus?.notify(channels.config, JSON.stringify({ v: result.version }))
    log.info({ source, ...(source === 'rollback' ? { to: body.version } : { key: body.key }), version: result.version, changed: result.changed, by: cred.via }, 'configuration changed from the dashboard')
    sendJson(res, 200, result)
  }

  /** `GET /config/{application}/{profile}[/{label}]`, as a Spring Cloud Config client asks it. */
  async function spring(res: ServerResponse, segments: string[]): Promise<void> {
    const [app, profile, label, extra] = segments.map(decodeSegment)
    if (!app || !profile || extra !== undefined || !SEGMENT.test(app) || (label !== undefined && !SEGMENT.test(label))) {
      throw new ChorusError('CHORUS_ERR_DASHBOARD_NOT_FOUND', [`/config/${segments.join('/')}`])
    }
    const view = viewOf(app === 'application' ? null : app, profile)
    const row = await store.read()
    const doc = box ? store.open(row) : ConfigStore.masked(row)
    sendJson(res, 200, springEnvironment(doc, view, row?.version ?? 0, label ?? null))
  }
}

type Body = Record<string, unknown>

/** A JSON object body (the actions take nothing else). */
async function jsonBody(req: IncomingMessage): Promise<Body> {
  if (mediaType(req) !== 'application/json') {
    req.resume()
    throw new ChorusError('CHORUS_ERR_DASHBOARD_UNSUPPORTED_MEDIA_TYPE', [mediaType(req) || 'untyped', 'application/json'])
  }
  const body = parseJson(await readBody(req))
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new ChorusError('CHORUS_ERR_DASHBOARD_BAD_REQUEST', ['the body must be a JSON object'])
  return body as Body
}

function viewOf(app: string | null, profile: string | null): View {
  const profiles = (profile ?? '').split(',').map((p) => p.trim()).filter(Boolean)
  if ((app !== null && app !== '' && !SEGMENT.test(app)) || profiles.some((p) => !SEGMENT.test(p))) {
    throw new ChorusError('CHORUS_ERR_DASHBOARD_BAD_REQUEST', ['app and profile names use A-Z a-z 0-9 _ . -'])
  }
  return { app: app || null, profiles }
}

function knownViews(registered: readonly Registered[], running: readonly Running[]): View[] {
  const seen = new Map<string, View>()
  for (const v of [...registered.map((r) => r.view), ...running.map((r) => r.view)]) seen.set(`${v.app ?? ''}|${v.profiles.join(',')}`, v)
  return [...seen.values()]
}


