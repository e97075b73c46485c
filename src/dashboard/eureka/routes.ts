/**
 * The Eureka v2 REST API, served under `/eureka/` (and `/eureka/v2/`), as the registry of the
 * classic setup answers it: register (204), renew (200, or 404 so the client registers again),
 * cancel, status override, metadata, and the registry in JSON or XML by the Accept header (XML when
 * the client does not ask for JSON, as Eureka's server does). Authentication is the caller's job.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { ChorusError } from '../../errors.js'
import { mediaType, parseJson, readBody, send, sendJson } from '../http.js'
import { applicationJson, applicationsJson, applicationXml, applicationsXml, instanceJson, instanceXml, XML_PROLOG, type Application } from './format.js'
import { appName, parseRegistration, parseStatus } from './instance.js'
import type { EurekaRegistry } from './registry.js'

export async function handleEureka(registry: EurekaRegistry, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  const parts = url.pathname.split('/').filter(Boolean)
  // ['eureka', ('v2',)? ...rest]
  const rest = parts[1] === 'v2' ? parts.slice(2) : parts.slice(1)
  const method = req.method ?? 'GET'
  const [head, a, b, c, extra] = rest
  if (extra !== undefined) throw notFound(url.pathname)

  if (head === undefined || head === 'status') {
    if (method !== 'GET' && method !== 'HEAD') throw notAllowed(method, url.pathname)
    const apps = await registry.applications()
    return reply(req, res, 200, { status: 'UP', applications: apps.length, instances: apps.reduce((n, x) => n + x.instances.length, 0) }, null)
  }

  if (head === 'apps') {
    if (a === undefined || (a === 'delta' && b === undefined)) {
      if (method !== 'GET' && method !== 'HEAD') throw notAllowed(method, url.pathname)
      const apps = await registry.applications()
      const delta = a === 'delta'
      return reply(req, res, 200, applicationsJson(apps, delta), () => applicationsXml(apps, delta))
    }
    const app = safeApp(a)
    if (b === undefined) {
      if (method === 'POST') {
        if (mediaType(req) !== 'application/json') throw new ChorusError('CHORUS_ERR_DASHBOARD_UNSUPPORTED_MEDIA_TYPE', [mediaType(req) || 'untyped', 'application/json'])
        const instance = parseRegistration(app, parseJson(await readBody(req)))
        await registry.register(instance)
        res.writeHead(204).end()
        return
      }
      if (method !== 'GET' && method !== 'HEAD') throw notAllowed(method, url.pathname)
      const found = (await registry.applications()).find((x) => x.name === app)
      if (!found) throw notFound(`application ${app}`)
      return reply(req, res, 200, { application: applicationJson(found) }, () => applicationXml(found))
    }
    const id = decode(b)
    if (c === undefined) {
      switch (method) {
        case 'PUT':
          if (!(await registry.renew(app, id))) throw notFound(`instance ${app}/${id}`)
          res.writeHead(200).end()
          return
        case 'DELETE':
          if (!(await registry.cancel(app, id))) throw notFound(`instance ${app}/${id}`)
          res.writeHead(200).end()
          return
        case 'GET':
        case 'HEAD': {
          const entry = find(await registry.applications(), app, id)
          return reply(req, res, 200, { instance: instanceJson(entry) }, () => instanceXml(entry))
        }
        default:
          throw notAllowed(method, url.pathname)
      }
    }
    if (c === 'status') {
      if (method !== 'PUT' && method !== 'DELETE') throw notAllowed(method, url.pathname)
      const value = method === 'DELETE' ? 'UNKNOWN' : parseStatus(url.searchParams.get('value'))
      if (!(await registry.setOverride(app, id, value))) throw notFound(`instance ${app}/${id}`)
      res.writeHead(200).end()
      return
    }
    if (c === 'metadata') {
      if (method !== 'PUT') throw notAllowed(method, url.pathname)
      const entries = Object.fromEntries(url.searchParams.entries())
      for (const [k, v] of Object.entries(entries)) {
        if (k.length === 0 || k.length > 200 || v.length > 1000 || /[\u0000-\u001f\u007f]/.test(k + v)) {
          throw new ChorusError('CHORUS_ERR_DASHBOARD_BAD_REQUEST', ['metadata keys are 1-200 characters and values at most 1000, without control characters'])
        }
      }
      if (!(await registry.updateMetadata(app, id, entries))) throw notFound(`instance ${app}/${id}`)
      res.writeHead(200).end()
      return
    }
    throw notFound(url.pathname)
  }

  if ((head === 'instances' || head === 'vips' || head === 'svips') && a !== undefined && b === undefined) {
    if (method !== 'GET' && method !== 'HEAD') throw notAllowed(method, url.pathname)
    const key = decode(a)
    const apps = await registry.applications()
    if (head === 'instances') {
      const entry = apps.flatMap((x) => x.instances).find((e) => e.stored.instanceId === key)
      if (!entry) throw notFound(`instance ${key}`)
      return reply(req, res, 200, { instance: instanceJson(entry) }, () => instanceXml(entry))
    }
    const field = head === 'vips' ? 'vipAddress' : 'secureVipAddress'
    const matching = apps
      .map((x) => ({ name: x.name, instances: x.instances.filter((e) => (e.stored[field] ?? '').split(',').includes(key)) }))
      .filter((x) => x.instances.length > 0)
    return reply(req, res, 200, applicationsJson(matching), () => applicationsXml(matching))
  }
  throw notFound(url.pathname)
}

/** JSON when the client asks for it before XML; XML otherwise (Eureka's default). */
function wantsJson(req: IncomingMessage): boolean {
  const accept = (req.headers.accept ?? '').toLowerCase()
  const j = accept.indexOf('json')
  const x = accept.indexOf('xml')
  return j >= 0 && (x < 0 || j < x)
}

function reply(req: IncomingMessage, res: ServerResponse, status: number, json: unknown, xml: (() => string) | null): void {
  if (xml === null || wantsJson(req)) return sendJson(res, status, json)
  send(res, status, XML_PROLOG + xml(), 'application/xml; charset=utf-8')
}

function find(apps: readonly Application[], app: string, id: string) {
  const entry = apps.find((x) => x.name === app)?.instances.find((e) => e.stored.instanceId === id)
  if (!entry) throw notFound(`instance ${app}/${id}`)
  return entry
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s)
  } catch {
    throw new ChorusError('CHORUS_ERR_DASHBOARD_BAD_REQUEST', ['malformed percent-encoding in the path'])
  }
}

function safeApp(s: string): string {
  return appName(decode(s))
}

function notFound(what: string): ChorusError {
  return new ChorusError('CHORUS_ERR_DASHBOARD_NOT_FOUND', [what])
}

function notAllowed(method: string, path: string): ChorusError {
  return new ChorusError('CHORUS_ERR_DASHBOARD_METHOD_NOT_ALLOWED', [method, path])
}
