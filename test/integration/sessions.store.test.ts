import { promisify } from 'node:util'
import session from 'express-session'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Cluster } from '../../src/cluster.js'
import type { SessionObject, SessionStore } from '../../src/index.js'
import { sweepSessions } from '../../src/sessions/sessions.js'
import { member } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

const cookie = (maxAge: number) => ({ originalMaxAge: maxAge, maxAge, path: '/', httpOnly: true })
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('the session store', () => {
  let db: TestDatabase
  let a: Cluster
  let b: Cluster
  let onA: SessionStore
  let onB: SessionStore
  const load = async (store: SessionStore, sid: string) => (await store.read(sid))!

  beforeAll(async () => {
    db = await testDatabase()
    a = await member(db.url, 'a')
    b = await member(db.url, 'b')
    onA = a.sessions.store()
    onB = b.sessions.store()
  })
  afterAll(async () => {
    await a?.close()
    await b?.close()
    await db?.drop()
  })

  it('round-trips a session with its cookie, carrying the version it was loaded at', async () => {
    expect(await onB.read('s1')).toBeNull()
    await onA.write('s1', { cookie: cookie(60_000), user: 'ann', cart: [1, 2] })
    const s = await load(onB, 's1')
    expect(s).toMatchObject({ user: 'ann', cart: [1, 2], cookie: { originalMaxAge: 60_000, path: '/' } })
    expect((s.__chorus as { v: number }).v).toBe(1)
    await onB.write('s1', s)
    expect(((await load(onA, 's1')).__chorus as { v: number }).v).toBe(2)
  })

  it('merges the keys each writer changed when two wrote from the same version', async () => {
    await onA.write('s2', { cookie: cookie(60_000), user: 'bob', theme: 'dark', draft: 'x', step: 1 })
    const first = await load(onA, 's2')
    const second = await load(onB, 's2')
    first.theme = 'light'
    first.step = 2
    second.cart = ['apple']
    delete second.draft
    await onA.write('s2', first)
    await onB.write('s2', second)
    const merged = await load(onA, 's2')
    const { cookie: _c, __chorus: meta, ...data } = merged
    // B did not change theme or step, so its stale copies of them do not overwrite A's writes.
    expect(data).toEqual({ user: 'bob', theme: 'light', step: 2, cart: ['apple'] })
    expect((meta as { v: number }).v).toBe(3)
  })

  it('lets the last writer win a key both changed', async () => {
    await onA.write('s3', { cookie: cookie(60_000), n: 0 })
    const first = await load(onA, 's3')
    const second = await load(onB, 's3')
    first.n = 1
    second.n = 2
    await onA.write('s3', first)
    await onB.write('s3', second)
    expect((await load(onA, 's3')).n).toBe(2)
  })

  it('does not bring back a session destroyed after a request loaded it', async () => {
    await onA.write('s4', { cookie: cookie(60_000), user: 'cy' })
    const stale = await load(onB, 's4')
    await onA.remove('s4')
    stale.late = true
    await onB.write('s4', stale)
    expect(await onA.read('s4')).toBeNull()
    // A session that was never loaded is new: it is written.
    await onB.write('s4', { cookie: cookie(60_000), user: 'cy' })
    expect((await load(onA, 's4')).user).toBe('cy')
  })

  it('expires a session at its cookie’s maxAge on database time; touch extends it', async () => {
    await onA.write('short', { cookie: cookie(300), user: 'dee' })
    await onA.write('kept', { cookie: cookie(60_000), user: 'eve' })
    await onB.extend('kept', { cookie: cookie(3_600_000) })
    const [kept] = await db.sql<{ ok: boolean }[]>`
      select expires_at > now() + interval '59 minutes' as ok from sessions where store = 'default' and sid = 'kept'`
    expect(kept!.ok).toBe(true)
    await sleep(400)
    expect(await onB.read('short')).toBeNull()
    expect((await load(onB, 'kept')).user).toBe('eve')
    // Touching an expired session does not bring it back.
    await onB.extend('short', { cookie: cookie(60_000) })
    expect(await onB.read('short')).toBeNull()
    await sweepSessions(a.db.sql)
    const [row] = await db.sql`select count(*)::int as n from sessions where sid = 'short'`
    expect(row!.n).toBe(0)
  })

  it('uses the store’s default lifetime when the cookie has none', async () => {
    const store = a.sessions.store({ name: 'no-cookie', ttlMs: 3_600_000 })
    await store.write('s', { user: 'fay' })
    expect((await store.read('s'))!.user).toBe('fay')
    const [row] = await db.sql<{ ok: boolean }[]>`
      select expires_at between now() + interval '59 minutes' and now() + interval '61 minutes' as ok
      from sessions where store = 'no-cookie' and sid = 's'`
    expect(row!.ok).toBe(true)
  })

  it('keeps stores of different names apart', async () => {
    const one = a.sessions.store({ name: 'one' })
    const two = b.sessions.store({ name: 'two' })
    await one.write('same', { user: 'one' })
    expect(await two.read('same')).toBeNull()
    await one.removeAll()
    expect(await one.read('same')).toBeNull()
  })

  it('refuses oversized and unserialisable sessions and bad ids with typed errors, writing nothing', async () => {
    const small = a.sessions.store({ name: 'small', maxBytes: 200 })
    await expect(small.write('big', { cookie: cookie(60_000), blob: 'x'.repeat(300) })).rejects.toMatchObject({ code: 'CHORUS_ERR_SESSION_TOO_LARGE', status: 413 })
    await expect(small.write('big', { n: 10n })).rejects.toMatchObject({ code: 'CHORUS_ERR_STATE_VALUE_NOT_SERIALIZABLE' })
    const cyclic: SessionObject = {}
    cyclic.self = cyclic
    await expect(small.write('big', cyclic)).rejects.toMatchObject({ code: 'CHORUS_ERR_STATE_VALUE_NOT_SERIALIZABLE' })
    await expect(small.write('', {})).rejects.toMatchObject({ code: 'CHORUS_ERR_SESSION_ID_INVALID' })
    await expect(small.write('x'.repeat(600), {})).rejects.toMatchObject({ code: 'CHORUS_ERR_SESSION_ID_INVALID' })
    expect(await small.read('')).toBeNull()
    expect(() => a.sessions.store({ name: 'bad name' })).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_STATE_NAME_INVALID' }))
    const [row] = await db.sql`select count(*)::int as n from sessions where store = 'small'`
    expect(row!.n).toBe(0)
  })

  it('refuses a merge that would grow the session past the limit, leaving the row as it was', async () => {
    const small = a.sessions.store({ name: 'small-merge', maxBytes: 200 })
    await small.write('m', { a: '' })
    const first = (await small.read('m'))!
    const second = (await small.read('m'))!
    first.a = 'x'.repeat(120)
    second.b = 'y'.repeat(120)
    await small.write('m', first)
    await expect(small.write('m', second)).rejects.toMatchObject({ code: 'CHORUS_ERR_SESSION_TOO_LARGE' })
    const now = (await small.read('m'))!
    expect([now.a, now.b]).toEqual(['x'.repeat(120), undefined])
  })

  it('answers the callback interface express-session and @fastify/session call', async () => {
    const store = a.sessions.store({ name: 'callbacks' })
    const get = promisify(store.get.bind(store))
    const set = promisify(store.set.bind(store))
    const touch = promisify(store.touch.bind(store))
    const destroy = promisify(store.destroy.bind(store))
    const length = promisify(store.length.bind(store))
    await set('cb', { cookie: cookie(60_000), user: 'gus' })
    expect(await get('cb')).toMatchObject({ user: 'gus' })
    await touch('cb', { cookie: cookie(60_000) })
    expect(await length()).toBe(1)
    await destroy('cb')
    expect(await get('cb')).toBeNull()
    await expect(set('', {})).rejects.toMatchObject({ code: 'CHORUS_ERR_SESSION_ID_INVALID' })
  })

  it('borrows express-session’s Store methods to build and regenerate sessions', async () => {
    const store = a.sessions.store({ name: 'express', session })
    await store.write('e1', { cookie: { originalMaxAge: 60_000, expires: new Date(Date.now() + 60_000).toISOString(), path: '/', httpOnly: true }, user: 'hal' })
    const loaded = await promisify<string, session.Session & { user?: string }>(store.load.bind(store) as never)('e1')
    expect(loaded.user).toBe('hal')
    expect(loaded.cookie.maxAge).toBeGreaterThan(0)
    const req = { sessionID: 'e1', sessionStore: store } as never
    let generated = false
    Object.assign(store, { generate: () => void (generated = true) })
    await promisify(store.regenerate.bind(store))(req)
    expect(generated).toBe(true)
    expect(await store.read('e1')).toBeNull()
    const bogus = a.sessions.store({ name: 'express', session: { Store: null } })
    expect(() => bogus.createSession({}, {})).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_SESSION_FRAMEWORK_MISSING' }))
  })
})
