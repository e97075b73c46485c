import { execFileSync } from 'node:child_process'
import { createHmac } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify from 'fastify'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Cluster } from '../../src/cluster.js'
import { ChorusError, isChorusError } from '../../src/errors.js'
import { NonceStore } from '../../src/rpc/nonces.js'
import { newNonce, requestHeaders, rpcKey } from '../../src/rpc/sign.js'
import { eventually, member, record, secret } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

const RPC = '/_chorus/rpc'

function listen(server: Server | ReturnType<typeof createHttpsServer>): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)))
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p
  } catch (err) {
    if (isChorusError(err)) return err.code
    throw err
  }
  return 'resolved'
}

/** A throw-away certificate authority and a server certificate for 127.0.0.1 it signed. */
async function makeCertificates(dir: string): Promise<{ ca: string; key: string; cert: string }> {
  const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' })
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  run('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=Chorus test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
  run('req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1')
  await writeFile(join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n')
  run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'ext.cnf')
  const [ca, key, cert] = await Promise.all(['ca.pem', 'server.key', 'server.pem'].map((f) => readFile(join(dir, f), 'utf8')))
  return { ca: ca!, key: key!, cert: cert! }
}

describe('signed RPC', () => {
  let db: TestDatabase
  let dir: string
  const clusters: Cluster[] = []
  const servers: { close(): unknown }[] = []
  let srv: Cluster
  let cli: Cluster
  let port: number
  let ran = 0
  let appHits = 0
  const key = rpcKey(secret)

  /** A raw POST to srv's RPC path with the given headers and body. */
  const raw = async (path: string, headers: Record<string, string>, body: string | Buffer, method = 'POST') => {
    const res = await request(`http://127.0.0.1:${port}${path}`, { method, headers, body: method === 'POST' ? body : undefined })
    const text = await res.body.text()
    return { status: res.statusCode, body: text ? (JSON.parse(text) as { result?: unknown; error?: { code: string; message: string } }) : null }
  }
  const signed = (path: string, body: string, over: { from?: string; to?: string; timestamp?: number; nonce?: string; key?: Buffer } = {}) =>
    requestHeaders(over.key ?? key, { path, from: over.from ?? 'cli', to: over.to ?? 'srv', body: Buffer.from(body), timestamp: over.timestamp, nonce: over.nonce })

  beforeAll(async () => {
    db = await testDatabase()
    dir = await mkdtemp(join(tmpdir(), 'chorus-rpc-'))
    const server = createServer((_req, res) => {
      appHits++
      res.end('app')
    })
    servers.push(server)
    port = await listen(server)
    srv = await member(db.url, 'srv', { advertiseUrl: `http://127.0.0.1:${port}`, rpc: { maxBodyBytes: 64 * 1024 } })
    cli = await member(db.url, 'cli', { rpc: { maxBodyBytes: 64 * 1024 } })
    clusters.push(srv, cli)
    srv.rpc.attach(server)
    srv.rpc.handle('count', (payload: { n?: number } | null, ctx) => {
      ran++
      return { ran, from: ctx.from, method: ctx.method, echo: payload }
    })
    srv.rpc.handle('typed', () => {
      throw new ChorusError('CHORUS_ERR_FILES_NOT_FOUND', ['"x"'], { details: { path: 'x' } })
    })
    srv.rpc.handle('plain', () => {
      throw Object.assign(new Error('kaputt'), { code: 'E_APP' })
    })
    srv.rpc.handle('huge', () => 'x'.repeat(100 * 1024))
    await eventually(() => cli.members.isLive('srv'), 'cli to see srv')
  })

  afterAll(async () => {
    await Promise.all(clusters.map((c) => c.close()))
    for (const s of servers) s.close()
    await db.drop()
    await rm(dir, { recursive: true, force: true })
  })

  it('calls a method on another instance and gets its result; the app keeps every other path', async () => {
    const r = await cli.rpc.call<{ ran: number; from: string; echo: unknown }>('srv', 'count', { n: 1, s: 'héllo ✓ 日本 😀' })
    expect(r).toMatchObject({ from: 'cli', method: 'count', echo: { n: 1, s: 'héllo ✓ 日本 😀' } })
    const res = await request(`http://127.0.0.1:${port}/hello`)
    expect(await res.body.text()).toBe('app')
    const before = appHits
    await cli.rpc.call('srv', 'count')
    expect(appHits).toBe(before)
  })

  describe('refuses with 401 before any handler runs', () => {
    const path = `${RPC}/count`

    it('a request without signature headers', async () => {
      const before = ran
      const r = await raw(path, { 'content-type': 'application/json' }, '{}')
      expect(r.status).toBe(401)
      expect(r.body?.error?.code).toBe('CHORUS_ERR_RPC_UNAUTHORIZED')
      expect(ran).toBe(before)
    })

    it('a forged signature (another secret), a tampered body and a changed sender', async () => {
      const refused = record(srv, 'rpc:request:refused')
      const before = ran
      const forged = await raw(path, signed(path, '{}', { key: rpcKey('not-the-cluster-secret-at-all') }), '{}')
      const headers = signed(path, '{"n":1}')
      const tampered = await raw(path, headers, '{"n":2}')
      const sender = await raw(path, { ...signed(path, '{}'), 'x-chorus-from': 'srv' }, '{}')
      const mac = createHmac('sha256', 'guess').update('x').digest('base64url')
      const guessed = await raw(path, { ...signed(path, '{}'), 'x-chorus-signature': `v1=${mac}` }, '{}')
      for (const r of [forged, tampered, sender, guessed]) {
        expect(r.status).toBe(401)
        expect(r.body?.error?.code).toBe('CHORUS_ERR_RPC_UNAUTHORIZED')
      }
      expect(ran).toBe(before)
      expect(refused.map((e) => e.reason)).toEqual(['signature', 'signature', 'signature', 'signature'])
    })

    it('a stale or future timestamp, even validly signed', async () => {
      const before = ran
      const stale = await raw(path, signed(path, '{}', { timestamp: Date.now() - 60_000 }), '{}')
      const future = await raw(path, signed(path, '{}', { timestamp: Date.now() + 60_000 }), '{}')
      expect([stale.status, future.status]).toEqual([401, 401])
      expect(stale.body?.error?.message).toContain('window')
      expect(ran).toBe(before)
    })

    it('a replayed request: the first copy runs once, the second is refused', async () => {
      const before = ran
      const headers = signed(path, '{"n":7}')
      const first = await raw(path, headers, '{"n":7}')
      expect(first.status).toBe(200)
      expect(ran).toBe(before + 1)
      const replay = await raw(path, headers, '{"n":7}')
      expect(replay.status).toBe(401)
      expect(replay.body?.error?.message).toContain('replay')
      expect(ran).toBe(before + 1)
    })
  })

  it('answers 404 to an unknown method, 405 to another HTTP method, 421 when addressed to another instance', async () => {
    const before = ran
    const unknown = await raw(`${RPC}/nothing-here`, signed(`${RPC}/nothing-here`, '{}'), '{}')
    expect(unknown.status).toBe(404)
    expect(unknown.body?.error?.code).toBe('CHORUS_ERR_RPC_METHOD_NOT_FOUND')
    expect(await codeOf(cli.rpc.call('srv', 'nothing-here'))).toBe('CHORUS_ERR_RPC_METHOD_NOT_FOUND')
    expect((await raw(`${RPC}/count`, {}, '', 'GET')).status).toBe(405)
    const misdirected = await raw(`${RPC}/count`, signed(`${RPC}/count`, '{}', { to: 'someone-else' }), '{}')
    expect(misdirected.status).toBe(421)
    expect(ran).toBe(before)
  })

  describe('oversized bodies', () => {
    it('refuses an oversized request with 413 before any handler runs, declared or streamed', async () => {
      const before = ran
      const big = JSON.stringify({ blob: 'x'.repeat(100 * 1024) })
      const declared = await raw(`${RPC}/count`, signed(`${RPC}/count`, big), big)
      expect(declared.status).toBe(413)
      expect(declared.body?.error?.code).toBe('CHORUS_ERR_RPC_BODY_TOO_LARGE')
      async function* chunks() {
        for (let i = 0; i < 10; i++) yield Buffer.from(big.slice(i * (big.length / 10), (i + 1) * (big.length / 10)))
      }
      const headers = signed(`${RPC}/count`, big)
      const res = await request(`http://127.0.0.1:${port}${RPC}/count`, { method: 'POST', headers, body: chunks() })
      expect(res.statusCode).toBe(413)
      await res.body.dump()
      expect(ran).toBe(before)
    })

    it('refuses to send an oversized payload, and reports an oversized result as a typed error', async () => {
      expect(await codeOf(cli.rpc.call('srv', 'count', { blob: 'x'.repeat(100 * 1024) }))).toBe('CHORUS_ERR_RPC_BODY_TOO_LARGE')
      expect(await codeOf(cli.rpc.call('srv', 'huge'))).toBe('CHORUS_ERR_RPC_BODY_TOO_LARGE')
      expect(await codeOf(cli.rpc.call('srv', 'count', { big: 10n }))).toBe('CHORUS_ERR_RPC_PAYLOAD_INVALID')
    })
  })

  it('brings handler failures back as typed errors', async () => {
    const typed = await cli.rpc.call('srv', 'typed').catch((e: unknown) => e)
    expect(isChorusError(typed, 'CHORUS_ERR_FILES_NOT_FOUND')).toBe(true)
    expect((typed as ChorusError).details).toMatchObject({ instanceId: 'srv', remote: true, path: 'x' })
    const plain = await cli.rpc.call('srv', 'plain').catch((e: unknown) => e)
    expect(isChorusError(plain, 'CHORUS_ERR_RPC_HANDLER_FAILED')).toBe(true)
    expect((plain as Error).message).toContain('kaputt')
    expect((plain as ChorusError).details).toMatchObject({ remoteCode: 'E_APP' })
    // The same on this instance: a call to itself runs the handler directly.
    srv.rpc.handle('self-plain', () => {
      throw new Error('local kaputt')
    })
    expect(await codeOf(srv.rpc.call('srv', 'self-plain'))).toBe('CHORUS_ERR_RPC_HANDLER_FAILED')
    expect(await srv.rpc.call('srv', 'count', { n: 3 })).toMatchObject({ from: 'srv', echo: { n: 3 } })
  })

  it('checks names and arguments', async () => {
    expect(() => srv.rpc.handle('count', () => 1)).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_RPC_DUPLICATE' }))
    expect(() => srv.rpc.handle('bad name', () => 1)).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_RPC_METHOD_INVALID' }))
    expect(await codeOf(cli.rpc.call('nobody', 'count'))).toBe('CHORUS_ERR_RPC_UNKNOWN_MEMBER')
    expect(await codeOf(cli.rpc.call('srv', 'count', null, { timeoutMs: -1 }))).toBe('CHORUS_ERR_OPTIONS_INVALID')
    // Options objects are strict, and a refusal names the option.
    await expect(cli.rpc.call('srv', 'count', null, { timeout: 5 } as never)).rejects.toMatchObject({ code: 'CHORUS_ERR_OPTIONS_INVALID', details: { option: 'timeout' } })
    await expect(cli.rpc.call('srv', 'count', null, { signal: 'stop' } as never)).rejects.toMatchObject({ code: 'CHORUS_ERR_OPTIONS_INVALID', details: { option: 'signal' } })
    await expect(cli.rpc.broadcast('count', null, { includeSelf: 'no' } as never)).rejects.toMatchObject({ code: 'CHORUS_ERR_OPTIONS_INVALID', details: { option: 'includeSelf' } })
    await expect(cli.rpc.call('srv', 'count', null, null as never)).rejects.toMatchObject({ code: 'CHORUS_ERR_OPTIONS_INVALID', message: 'invalid option "options": must be an object' })
    expect(() => cli.rpc.attach({} as never)).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_OPTIONS_INVALID', details: { option: 'server' } }))
  })

  it('refuses an answer that is not signed by the instance called', async () => {
    // An ordinary server where the member says it is (a stale URL, a port reused after a crash).
    const impostor = createServer((_req, res) => {
      res.setHeader('content-type', 'application/json')
      res.end('{"result":"trust me"}')
    })
    servers.push(impostor)
    const p = await listen(impostor)
    const fake = await member(db.url, 'fake', { advertiseUrl: `http://127.0.0.1:${p}` })
    clusters.push(fake)
    await eventually(() => cli.members.isLive('fake'), 'cli to see fake')
    expect(await codeOf(cli.rpc.call('fake', 'count'))).toBe('CHORUS_ERR_RPC_BAD_RESPONSE')
  })

  it('works over HTTPS with a custom certificate authority, and fails without it', async () => {
    const certs = await makeCertificates(dir)
    let tls!: Cluster
    const server = createHttpsServer({ key: certs.key, cert: certs.cert }, (req, res) => tls.rpc.handler(req, res, () => res.end('app')))
    servers.push(server)
    const p = await listen(server)
    tls = await member(db.url, 'tls', { advertiseUrl: `https://127.0.0.1:${p}` })
    const trusting = await member(db.url, 'trusting', { rpc: { ca: certs.ca } })
    clusters.push(tls, trusting)
    tls.rpc.handle('hello', (_p, ctx) => `hello ${ctx.from}`)
    await eventually(() => trusting.members.isLive('tls') && cli.members.isLive('tls'), 'the members to see tls')
    expect(await trusting.rpc.call('tls', 'hello')).toBe('hello trusting')
    const untrusted = await cli.rpc.call('tls', 'hello').catch((e: unknown) => e)
    expect(isChorusError(untrusted, 'CHORUS_ERR_RPC_UNREACHABLE')).toBe(true)
    expect((untrusted as Error).message).toMatch(/certificate/i)
  })

  it('serves through the Fastify plugin, before Fastify reads the body', async () => {
    // The member must advertise the port before the plugin is registered: take a free one first.
    const probe = createServer()
    const p = await listen(probe)
    await new Promise((r) => probe.close(r))
    const fst = await member(db.url, 'fst', { advertiseUrl: `http://127.0.0.1:${p}` })
    clusters.push(fst)
    fst.rpc.handle('sum', (nums: number[]) => nums.reduce((a, b) => a + b, 0))
    const app = Fastify()
    app.get('/hello', async () => 'fastify app')
    await app.register(fst.rpc.fastify)
    await app.listen({ port: p, host: '127.0.0.1' })
    servers.push({ close: () => app.close() })
    await eventually(() => srv.members.isLive('fst'), 'srv to see fst')
    expect(await srv.rpc.call('fst', 'sum', [1, 2, 3])).toBe(6)
    const forged = await request(`http://127.0.0.1:${p}${RPC}/sum`, {
      method: 'POST', body: '[1]', headers: requestHeaders(rpcKey('wrong-secret-wrong-secret'), { path: `${RPC}/sum`, from: 'srv', to: 'fst', body: Buffer.from('[1]') }),
    })
    expect(forged.statusCode).toBe(401)
    await forged.body.dump()
    const page = await request(`http://127.0.0.1:${p}/hello`)
    expect(await page.body.text()).toBe('fastify app')
  })

  it('remembers nonces in bounded memory without ever re-admitting a replay', () => {
    const store = new NonceStore(30_000, 100)
    const now = 1_000_000
    const nonces = Array.from({ length: 150 }, () => newNonce())
    nonces.forEach((n, i) => expect(store.check(n, now + i, now + i)).toBe('ok'))
    expect(store.size).toBe(100)
    // Forgotten (the oldest 50): refused as too old, never accepted again.
    expect(store.check(nonces[0]!, now, now + 150)).toBe('too-old')
    expect(store.check(nonces[49]!, now + 49, now + 150)).toBe('too-old')
    // Remembered: a replay.
    expect(store.check(nonces[120]!, now + 120, now + 150)).toBe('replay')
    // Past the window, entries expire; their timestamps stay refused.
    expect(store.check(newNonce(), now + 40_000, now + 40_000)).toBe('ok')
    expect(store.size).toBe(1)
    expect(store.check(nonces[149]!, now + 149, now + 149)).toBe('too-old')
  })
})
