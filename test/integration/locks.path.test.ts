import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { Cluster } from '../../src/cluster.js'
import { isChorusError } from '../../src/errors.js'
import type { Lock, LockMode } from '../../src/locks/locks.js'
import { lockStatus } from '../../src/locks/status.js'
import { eventually, member } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

describe('locks: path locks with intention locks on ancestors', () => {
  let db: TestDatabase
  let a: Cluster
  let b: Cluster
  const taken: Lock[] = []

  /** b tries `path` in `mode` without waiting; true when it got it (and gives it back at once). */
  async function bCan(path: string, mode: LockMode): Promise<boolean> {
    const lock = await b.locks.tryPath(path, mode)
    await lock?.release()
    return lock !== null
  }

  beforeAll(async () => {
    db = await testDatabase()
    ;[a, b] = await Promise.all([member(db.url, 'a'), member(db.url, 'b')])
  })
  afterEach(async () => {
    await Promise.all(taken.splice(0).map((l) => l.release()))
  })
  afterAll(async () => {
    await Promise.all([a, b].map((x) => x?.close()))
    await db.drop()
  })

  it('exclusive on a/b blocks a/b/c in any mode, a/b itself and the ancestor a; a/c is unaffected', async () => {
    taken.push(await a.locks.path('a/b', 'exclusive'))
    expect(await bCan('a/b/c', 'shared')).toBe(false)
    expect(await bCan('a/b/c', 'exclusive')).toBe(false)
    expect(await bCan('a/b/c/d/e', 'shared')).toBe(false)
    expect(await bCan('a/b', 'shared')).toBe(false)
    expect(await bCan('a', 'shared')).toBe(false)
    expect(await bCan('a', 'exclusive')).toBe(false)
    expect(await bCan('a/c', 'exclusive')).toBe(true)
    expect(await bCan('a/c/d', 'shared')).toBe(true)
    expect(await bCan('a/bc', 'exclusive')).toBe(true) // a sibling whose name merely starts the same
    expect(await bCan('b', 'exclusive')).toBe(true)
  })

  it('and vice versa: any lock under a/b blocks exclusive on a/b', async () => {
    taken.push(await a.locks.path('a/b/c', 'shared'))
    expect(await bCan('a/b', 'exclusive')).toBe(false)
    expect(await bCan('a', 'exclusive')).toBe(false)
    expect(await bCan('a/b', 'shared')).toBe(true) // readers of a/b and of a/b/c share
    expect(await bCan('a/b/c', 'shared')).toBe(true)
    expect(await bCan('a/b/c', 'exclusive')).toBe(false)
    expect(await bCan('a/b/d', 'exclusive')).toBe(true)
    expect(await bCan('a/c', 'exclusive')).toBe(true)
    await taken.pop()!.release()
    taken.push(await a.locks.path('a/b/c', 'exclusive'))
    expect(await bCan('a/b', 'exclusive')).toBe(false)
    expect(await bCan('a/b', 'shared')).toBe(false)
    expect(await bCan('a/b/c/d', 'shared')).toBe(false)
    expect(await bCan('a/b/d', 'exclusive')).toBe(true)
    expect(await bCan('a/c', 'exclusive')).toBe(true)
  })

  it('wakes a waiter on a/b when the last lock under it is released', async () => {
    const under1 = await a.locks.path('w/b/f1', 'exclusive')
    const under2 = await a.locks.path('w/b/g/f2', 'shared')
    let granted = false
    const waiting = b.locks.path('w/b', 'exclusive').then((l) => ((granted = true), l))
    await eventually(async () => (await lockStatus(db.sql)).waiters === 1, 'the waiter to queue')
    await under1.release()
    await new Promise((r) => setTimeout(r, 100))
    expect(granted).toBe(false)
    // While the subtree lock is queued, newcomers under a/b wait behind it…
    expect(await a.locks.tryPath('w/b/f3', 'exclusive')).toBeNull()
    // …but elsewhere under w nothing waits.
    const elsewhere = await a.locks.tryPath('w/c', 'exclusive')
    expect(elsewhere).not.toBeNull()
    await elsewhere!.release()
    await under2.release()
    const lock = await waiting
    expect(lock.path).toBe(true)
    expect(lock.name).toBe('w/b')
    await lock.release()
  })

  it('keeps plain names and paths apart', async () => {
    taken.push(await a.locks.acquire('p/q'))
    const path = await b.locks.tryPath('p/q', 'exclusive')
    expect(path).not.toBeNull()
    taken.push(path!)
    expect(await b.locks.tryAcquire('p/q')).toBeNull()
  })

  it('gives each path its own increasing fencing tokens', async () => {
    const t1 = await a.locks.path('tok/x', 'exclusive')
    await t1.release()
    const t2 = await b.locks.path('tok/x', 'shared')
    await t2.release()
    expect(t2.token).toBeGreaterThan(t1.token)
  })

  it('rejects bad paths with CHORUS_ERR_LOCK_PATH_INVALID', async () => {
    const bad = ['', '/a', 'a/', 'a//b', '..', '.', 'a/../b', 'a/./b', 'a\u0000b', 'x'.repeat(1025), Array(65).fill('s').join('/')]
    for (const p of bad) {
      let err: unknown
      try {
        await a.locks.path(p, 'exclusive')
      } catch (e) {
        err = e
      }
      expect(isChorusError(err, 'CHORUS_ERR_LOCK_PATH_INVALID'), JSON.stringify(p.slice(0, 20))).toBe(true)
      let tryErr: unknown
      try {
        await a.locks.tryPath(p)
      } catch (e) {
        tryErr = e
      }
      expect(isChorusError(tryErr, 'CHORUS_ERR_LOCK_PATH_INVALID')).toBe(true)
    }
    let modeErr: unknown
    try {
      await a.locks.path('ok', 'write' as LockMode)
    } catch (e) {
      modeErr = e
    }
    expect(isChorusError(modeErr, 'CHORUS_ERR_LOCK_OPTIONS_INVALID')).toBe(true)
    expect((await lockStatus(db.sql)).held).toBe(0)
  })
})
