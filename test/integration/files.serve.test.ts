import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import express from 'express'
import Fastify, { type FastifyInstance } from 'fastify'
import { Client, request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Cluster } from '../../src/cluster.js'
import { serveArea } from '../../src/files/serve.js'
import { member } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

const listen = (server: Server) => new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)))

describe('serving a files area over HTTP', () => {
  let db: TestDatabase
  let root: string
  let cluster: Cluster
  let plain: Server
  let app: Server
  let fastify: FastifyInstance
  let base: string
  let expressBase: string
  let fastifyBase: string
  const get = async (url: string, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' | 'POST' = 'GET') => {
    const res = await request(url, { method, headers })
    return { status: res.statusCode, headers: res.headers, body: await res.body.text() }
  }
  /** Sends `path` exactly as written (a URL object would resolve `%2e%2e` before sending). */
  const raw = async (url: string, path: string) => {
    const { origin, pathname } = new URL(url)
    const client = new Client(origin)
    try {
      const res = await client.request({ method: 'GET', path: pathname + path })
      return { status: res.statusCode, body: await res.body.text() }
    } finally {
      await client.close()
    }
  }

  beforeAll(async () => {
    db = await testDatabase()
    root = await mkdtemp(join(tmpdir(), 'chorus-serve-'))
    cluster = await member(db.url, 'serve-a', { files: { root } })
    const uploads = cluster.files.area('uploads')
    await uploads.write('hello.txt', 'hello, world')
    await uploads.write('data/report.json', '{"ok":true}')
    await uploads.write('pic.png', Buffer.from([0x89, 0x50, 0x4e, 0x47, 1, 2, 3, 4]))
    await uploads.write('empty.bin', Buffer.alloc(0))
    await cluster.files.write('secret.txt', 'outside the area')
    plain = createServer(serveArea(uploads, { prefix: '/uploads', maxAgeSeconds: 60 }))
    base = `http://127.0.0.1:${await listen(plain)}/uploads`
    const e = express()
    e.use('/uploads', uploads.serve()) // the area's own method, as the docs show it
    e.use((_req, res) => void res.status(404).send('fell through'))
    app = createServer(e)
    expressBase = `http://127.0.0.1:${await listen(app)}/uploads`
    fastify = Fastify()
    await fastify.register(uploads.fastify({ prefix: '/uploads' }))
    fastifyBase = `${await fastify.listen({ port: 0, host: '127.0.0.1' })}/uploads`
  })
  afterAll(async () => {
    plain?.close()
    app?.close()
    await fastify?.close()
    await cluster?.close()
    await db?.drop()
    if (root) await rm(root, { recursive: true, force: true })
  })

  it('answers a file with its type, length, ETag, Last-Modified and cache policy', async () => {
    const res = await get(`${base}/hello.txt`)
    expect(res.status).toBe(200)
    expect(res.body).toBe('hello, world')
    expect(res.headers['content-type']).toBe('text/plain; charset=utf-8')
    expect(res.headers['content-length']).toBe('12')
    expect(res.headers.etag).toMatch(/^W\/"c-[0-9a-f]+"$/)
    expect(new Date(res.headers['last-modified'] as string).getTime()).toBeGreaterThan(0)
    expect(res.headers['cache-control']).toBe('public, max-age=60')
    expect(res.headers['accept-ranges']).toBe('bytes')
    expect((await get(`${base}/data/report.json`)).headers['content-type']).toBe('application/json; charset=utf-8')
    expect((await get(`${base}/pic.png`)).headers['content-type']).toBe('image/png')
    const empty = await get(`${base}/empty.bin`)
    expect([empty.status, empty.body, empty.headers['content-length']]).toEqual([200, '', '0'])
  })

  it('answers 304 to If-None-Match and If-Modified-Since while the file is unchanged, 200 once it changed', async () => {
    const first = await get(`${base}/data/report.json`)
    const etag = first.headers.etag as string
    const lastModified = first.headers['last-modified'] as string
    const byTag = await get(`${base}/data/report.json`, { 'if-none-match': etag })
    expect([byTag.status, byTag.body]).toEqual([304, ''])
    expect((await get(`${base}/data/report.json`, { 'if-modified-since': lastModified })).status).toBe(304)
    await cluster.files.area('uploads').write('data/report.json', '{"ok":false,"v":2}')
    const changed = await get(`${base}/data/report.json`, { 'if-none-match': etag })
    expect(changed.status).toBe(200)
    expect(changed.body).toBe('{"ok":false,"v":2}')
    expect(changed.headers.etag).not.toBe(etag)
  })

  it('answers HEAD with the headers of GET and no body', async () => {
    const res = await get(`${base}/hello.txt`, {}, 'HEAD')
    expect(res.status).toBe(200)
    expect(res.body).toBe('')
    expect(res.headers['content-length']).toBe('12')
    expect(res.headers.etag).toBeDefined()
  })

  it('serves a single byte range with 206, the whole file for several, and 416 past the end', async () => {
    const part = await get(`${base}/hello.txt`, { range: 'bytes=7-11' })
    expect([part.status, part.body, part.headers['content-range'], part.headers['content-length']]).toEqual([206, 'world', 'bytes 7-11/12', '5'])
    const suffix = await get(`${base}/hello.txt`, { range: 'bytes=-5' })
    expect([suffix.status, suffix.body]).toEqual([206, 'world'])
    const open = await get(`${base}/hello.txt`, { range: 'bytes=7-' })
    expect([open.status, open.body]).toEqual([206, 'world'])
    const several = await get(`${base}/hello.txt`, { range: 'bytes=0-1,5-6' })
    expect([several.status, several.body]).toEqual([200, 'hello, world'])
    const past = await get(`${base}/hello.txt`, { range: 'bytes=50-60' })
    expect([past.status, past.headers['content-range']]).toEqual([416, 'bytes */12'])
    const stale = await get(`${base}/hello.txt`, { range: 'bytes=0-4', 'if-range': 'W/"0-0"' })
    expect([stale.status, stale.body]).toEqual([200, 'hello, world'])
    const current = (await get(`${base}/hello.txt`)).headers.etag as string
    expect((await get(`${base}/hello.txt`, { range: 'bytes=0-4', 'if-range': current })).body).toBe('hello')
  })

  it('refuses paths that could leave the area, and never serves what is outside it', async () => {
    for (const path of ['/..%2fsecret.txt', '/%2e%2e/secret.txt', '/a%00b', '/%5c..%5csecret.txt', '/.chorus-tmp.1.abc.x', '/data/%2e%2e/%2e%2e/secret.txt', '//etc/passwd', '/%E0%A4%A']) {
      const res = await raw(base, path)
      expect(res.status, path).toBe(400)
      expect(res.body).not.toContain('outside the area')
    }
    await symlink(join(root, 'secret.txt'), join(root, 'uploads/link.txt'))
    const linked = await get(`${base}/link.txt`)
    expect(linked.status).toBe(404)
    expect(linked.body).not.toContain('outside the area')
  })

  it('answers 404 for what is missing or a directory, and 405 for other methods, on a plain server', async () => {
    expect((await get(`${base}/nope.txt`)).status).toBe(404)
    expect((await get(`${base}/data`)).status).toBe(404)
    expect((await get(`${base}/data/`)).status).toBe(404)
    expect((await get(`${base.replace('/uploads', '/elsewhere')}/hello.txt`)).status).toBe(404)
    const post = await get(`${base}/hello.txt`, {}, 'POST')
    expect([post.status, post.headers.allow]).toEqual([405, 'GET, HEAD'])
  })

  it('mounts in Express like express.static: files below the mount point, the rest falls through', async () => {
    const res = await get(`${expressBase}/data/report.json`, { range: 'bytes=0-5' })
    expect([res.status, res.body]).toEqual([206, '{"ok":'])
    const missing = await get(`${expressBase}/nope.txt`)
    expect([missing.status, missing.body]).toEqual([404, 'fell through'])
  })

  it('serves the same through the Fastify adapter', async () => {
    const res = await get(`${fastifyBase}/hello.txt`)
    expect([res.status, res.body, res.headers['content-type']]).toEqual([200, 'hello, world', 'text/plain; charset=utf-8'])
    expect((await get(`${fastifyBase}/hello.txt`, { 'if-none-match': res.headers.etag as string })).status).toBe(304)
    expect((await get(`${fastifyBase}/hello.txt`, { range: 'bytes=0-4' })).body).toBe('hello')
    expect((await get(`${fastifyBase}/nope.txt`)).status).toBe(404)
    expect((await raw(fastifyBase, '/%2e%2e/secret.txt')).status).toBe(400)
    expect((await raw(fastifyBase, '/..%2fsecret.txt')).status).toBe(400)
  })
})
