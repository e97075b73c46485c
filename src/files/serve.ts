/**
 * Serves a files area over HTTP, as `express.static` serves a directory — but through the files
 * API, so every request path gets the same checks as any other files path (no `..`, NUL,
 * backslash, absolute path, reserved `.chorus-` name or symbolic link; refused with 400/404 before
 * any file is opened) and a file is always one whole version (files are replaced atomically).
 * Content-Type comes from mime-types, conditional GET from fresh, Range from range-parser (the
 * libraries Express's own static server uses); single ranges only (206/416), HEAD, ETag and
 * Last-Modified. A file replaced between its stat and its open is sent as the newer version.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { extname } from 'node:path'
import { pipeline } from 'node:stream/promises'
import fresh from 'fresh'
import { contentType } from 'mime-types'
import parseRange from 'range-parser'
import { z } from 'zod'
import { isChorusError, toError } from '../errors.js'
import { parseOptions } from '../util/parse-options.js'
import { parsePath } from './paths.js'
import type { FileStat, ReadStreamOptions } from './options.js'

/** The part of a files area (`cluster.files.area(name)`) serving needs. */
export interface ServableArea {
  stat(path: string): Promise<FileStat | null>
  createReadStream(path: string, opts?: ReadStreamOptions): Promise<NodeJS.ReadableStream>
}

const serveOptionsSchema = z.strictObject(
  {
    /** `Cache-Control: public, max-age=<seconds>`. Default 0 (revalidate with ETag/Last-Modified each time). */
    maxAgeSeconds: z.number({ error: 'must be a number of seconds' }).int({ error: 'must be an integer' }).min(0, { error: 'must be 0 or more' }).max(31_536_000, { error: 'must be at most a year' }).default(0),
    /** Adds `immutable` to Cache-Control (for content-addressed names). Default false. */
    immutable: z.boolean({ error: 'must be true or false' }).default(false),
    /**
     * Where nothing is found (or the method is not GET/HEAD), pass the request to `next` (Express)
     * instead of answering 404/405. Default true, as `express.static`; without `next`, always answered.
     */
    fallthrough: z.boolean({ error: 'must be true or false' }).default(true),
    /** A URL prefix to remove before the path is looked up, for a plain Node server (`/uploads`). Default none. */
    prefix: z.string({ error: 'must be a URL path' }).regex(/^(\/[^/]+)*$/, { error: 'must be a URL path such as /uploads, without a trailing slash' }).default(''),
  },
  { error: 'must be an object' },
)

export type ServeOptions = z.input<typeof serveOptionsSchema>
type Options = z.output<typeof serveOptionsSchema>

/** A Node http request handler and Express middleware: `app.use('/uploads', serveArea(area))`. */
export type FileHandler = (req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void) => void

/** Minimal Fastify surface, so Fastify stays an optional peer. */
export interface FastifyRouteLike {
  route(opts: { method: string[]; url: string; handler: (request: { raw: IncomingMessage; params: unknown }, reply: { hijack(): void; raw: ServerResponse }) => unknown }): unknown
}

/** Serves the files of `area` (`cluster.files.area('uploads')`) at the request's path (below the mount point). */
export function serveArea(area: ServableArea, opts: ServeOptions = {}): FileHandler {
  const o = parseOptions(serveOptionsSchema, opts)
  return (req, res, next) => {
    const raw = (req.url ?? '/').split('?')[0]!
    const path = o.prefix && (raw === o.prefix || raw.startsWith(o.prefix + '/')) ? raw.slice(o.prefix.length) : o.prefix ? null : raw
    if (path === null) return pass(res, next, o, 404)
    void serveFile(area, path, req, res, next, o)
  }
}

/**
 * A Fastify plugin serving `area` at `GET|HEAD <prefix>/*`:
 * `app.register(fastifyServeArea(area, { prefix: '/uploads' }))`.
 */
export function fastifyServeArea(area: ServableArea, opts: ServeOptions = {}): (app: FastifyRouteLike, _opts: unknown, done: (err?: Error) => void) => void {
  const o = parseOptions(serveOptionsSchema, opts)
  const local = { ...o, fallthrough: false }
  return (app, _opts, done) => {
    try {
      app.route({
        method: ['GET', 'HEAD'],
        url: `${o.prefix}/*`,
        handler: (request, reply) => {
          reply.hijack()
          const rest = (request.params as Record<string, string | undefined>)['*'] ?? ''
          // Fastify hands the wildcard decoded; encode it again so one decoding rule applies.
          void serveFile(area, '/' + rest.split('/').map(encodeURIComponent).join('/'), request.raw, reply.raw, undefined, local)
        },
      })
      done()
    } catch (err) {
      done(toError(err))
    }
  }
}

async function serveFile(area: ServableArea, urlPath: string, req: IncomingMessage, res: ServerResponse, next: ((err?: unknown) => void) | undefined, o: Options): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') return pass(res, next, o, 405)
  let path: string
  try {
    path = decodeURIComponent(urlPath).replace(/^\//, '')
    if (path === '' || path.endsWith('/')) return pass(res, next, o, 404)
    parsePath(path)
  } catch {
    return answer(res, 400, 'bad path')
  }
  let stat: FileStat | null
  try {
    stat = await area.stat(path)
  } catch (err) {
    return failed(res, next, err)
  }
  if (!stat || stat.type !== 'file') return pass(res, next, o, 404)

  const etag = `W/"${stat.size.toString(16)}-${stat.mtime.getTime().toString(16)}"` // as the etag package writes one for a file
  const lastModified = stat.mtime.toUTCString()
  res.setHeader('ETag', etag)
  res.setHeader('Last-Modified', lastModified)
  res.setHeader('Content-Type', contentType(extname(path)) || 'application/octet-stream')
  res.setHeader('Accept-Ranges', 'bytes')
  res.setHeader('Cache-Control', `public, max-age=${o.maxAgeSeconds}${o.immutable ? ', immutable' : ''}`)
  res.setHeader('X-Content-Type-Options', 'nosniff')
  if (fresh(req.headers, { etag, 'last-modified': lastModified })) {
    for (const h of ['Content-Type', 'Content-Length']) res.removeHeader(h)
    res.statusCode = 304
    res.end()
    return
  }

  let start = 0
  let end = stat.size - 1
  const range = req.headers.range
  if (range && ifRangeHolds(req.headers['if-range'] as string | undefined, etag, stat.mtime)) {
    const ranges = parseRange(stat.size, range, { combine: true })
    if (ranges === -1) {
      res.setHeader('Content-Range', `bytes */${stat.size}`)
      return answer(res, 416, 'range not satisfiable')
    }
    // Malformed (-2), another unit, or several ranges: the whole file, as the RFC allows.
    if (ranges !== -2 && ranges.type === 'bytes' && ranges.length === 1) {
      start = ranges[0]!.start
      end = ranges[0]!.end
      res.statusCode = 206
      res.setHeader('Content-Range', `bytes ${start}-${end}/${stat.size}`)
    }
  }
  res.setHeader('Content-Length', Math.max(0, end - start + 1))
  if (req.method === 'HEAD' || stat.size === 0) {
    res.end()
    return
  }
  try {
    const stream = await area.createReadStream(path, { start, end })
    await pipeline(stream, res)
  } catch (err) {
    if (!res.headersSent) return failed(res, next, err)
    res.destroy()
  }
}

/** If-Range: the range applies only while the file is still the version the client has. */
function ifRangeHolds(ifRange: string | undefined, etag: string, mtime: Date): boolean {
  if (!ifRange) return true
  if (ifRange.includes('"')) return ifRange === etag
  const at = Date.parse(ifRange)
  return Number.isFinite(at) && Math.floor(mtime.getTime() / 1000) <= Math.floor(at / 1000)
}

function pass(res: ServerResponse, next: ((err?: unknown) => void) | undefined, o: Options, status: 404 | 405): void {
  if (next && o.fallthrough) return next()
  if (status === 405) res.setHeader('Allow', 'GET, HEAD')
  answer(res, status, status === 404 ? 'not found' : 'method not allowed')
}

/** A files error becomes its status (a bad or linked path 400/404, a vanished file 404); anything else goes to `next` or a 500. */
function failed(res: ServerResponse, next: ((err?: unknown) => void) | undefined, err: unknown): void {
  if (isChorusError(err)) {
    if (err.code === 'CHORUS_ERR_FILES_PATH_INVALID') return answer(res, 400, 'bad path')
    if (err.code === 'CHORUS_ERR_FILES_NOT_FOUND' || err.code === 'CHORUS_ERR_FILES_SYMLINK' || err.code === 'CHORUS_ERR_FILES_WRONG_TYPE') return answer(res, 404, 'not found')
  }
  if (next) return next(err)
  answer(res, 500, 'could not read the file')
}

function answer(res: ServerResponse, status: number, text: string): void {
  for (const h of ['ETag', 'Last-Modified', 'Accept-Ranges', 'Cache-Control', 'Content-Length']) res.removeHeader(h)
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(text) + 1 })
  res.end(text + '\n')
}
