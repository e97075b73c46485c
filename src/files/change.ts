/**
 * The changing side of the files API: write, move and remove. Each runs under an exclusive path
 * lock on what it changes (with intention locks on the ancestors) — its own, or one the caller
 * holds and passes as `lock` — so a write of `a/b/f` and a removal of `a/b` never interleave on
 * any instance. A move takes two locks without ever waiting for one while holding the other.
 */
import type { Stats } from 'node:fs'
import { lstat, rename, rm, rmdir, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { ChorusError, toError } from '../errors.js'
import type { Lock } from '../locks/lease.js'
import { parseOptions } from '../util/parse-options.js'
import {
  moveOptions, removeOptions, writeOptions, type FileLockWait, type MoveResult, type RemoveResult, type WriteResult,
} from './options.js'
import { compareSegments, covers, invalidPath, isAncestorOrSelf, lockName, show, tempName } from './paths.js'
import { code, ioError, notFound, symlinkError, syncDir, syncDirs, wrongType } from './root.js'
import type { Scope } from './scope.js'
import { checkData, knownSize, writeAtomic, type WriteData } from './write.js'

/**
 * Writes a file atomically under an exclusive path lock, creating its directories: readers see
 * the old content or the new, never a part. `data` may be a stream; it is cut off past `maxBytes`
 * (`CHORUS_ERR_FILES_TOO_LARGE`, nothing written).
 */
export async function writeFile(scope: Scope, path: string, data: WriteData, options: unknown): Promise<WriteResult> {
  const segments = scope.resolve(path)
  const shown = scope.shown(segments)
  if (scope.isBase(segments)) throw invalidPath(path, 'must name a file below the root')
  const opts = parseOptions(writeOptions, options)
  const maxBytes = opts.maxBytes ?? scope.ctx.maxFileBytes
  checkData(data, shown)
  const size = knownSize(data)
  if (size !== null && size > maxBytes) {
    throw new ChorusError('CHORUS_ERR_FILES_TOO_LARGE', [show(shown), maxBytes], { details: { path: shown, maxBytes } })
  }
  scope.ctx.assertOpen('writing a file')
  const real = await scope.ctx.root.real()
  return exclusive(scope, segments, opts, async (lock) => {
    const self = scope.ctx.members.self
    const r = await writeAtomic({
      root: scope.ctx.root, real, segments, path: shown, data, maxBytes, overwrite: opts.overwrite ?? true, lock,
      signal: opts.signal, instanceId: self.instanceId, epoch: self.epoch,
    })
    return { path: scope.shown(segments), size: r.size, sha256: r.sha256, token: lock.token }
  })
}

/**
 * Moves a file or directory (rename, atomic), creating the destination's directories. Holds
 * exclusive path locks on both paths; it never waits for one while holding the other, so
 * concurrent moves cannot deadlock.
 */
export async function moveEntry(scope: Scope, from: string, to: string, options: unknown): Promise<MoveResult> {
  const src = scope.resolve(from)
  const dst = scope.resolve(to)
  const shownFrom = scope.shown(src)
  const shownTo = scope.shown(dst)
  if (scope.isBase(src) || scope.isBase(dst)) throw invalidPath(scope.isBase(src) ? from : to, 'must name something below the root')
  if (isAncestorOrSelf(src, dst) || isAncestorOrSelf(dst, src)) {
    throw invalidPath(to, `is ${compareSegments(src, dst) === 0 ? 'the same path as' : 'inside or above'} ${show(shownFrom)}`)
  }
  const opts = parseOptions(moveOptions, options)
  scope.ctx.assertOpen('moving a file')
  const real = await scope.ctx.root.real()
  const [fromLock, toLock] = await lockBoth(scope, src, dst, opts)
  const created: string[] = []
  try {
    const root = scope.ctx.root
    if ((await root.checkDir(real, src.slice(0, -1), shownFrom)) === 'missing') throw notFound(shownFrom)
    const fromAbs = join(real, ...src)
    const st = await lstat(fromAbs).catch((err: unknown) => {
      throw code(err) === 'ENOENT' || code(err) === 'ENOTDIR' ? notFound(shownFrom) : ioError('inspect', shownFrom, err)
    })
    if (st.isSymbolicLink()) throw symlinkError(shownFrom, shownFrom)
    created.push(...(await root.ensureDir(real, dst.slice(0, -1), shownTo)))
    const toAbs = join(real, ...dst)
    const existing = await lstat(toAbs).catch((err: unknown) => {
      if (code(err) === 'ENOENT') return null
      if (code(err) === 'ENOTDIR') throw wrongType(scope.shown(dst.slice(0, -1)), 'a file', 'a directory')
      throw ioError('inspect', shownTo, err)
    })
    if (existing) {
      if (existing.isSymbolicLink()) throw symlinkError(shownTo, shownTo)
      if (!opts.overwrite) throw new ChorusError('CHORUS_ERR_FILES_EXISTS', [show(shownTo)], { details: { path: shownTo } })
      if (existing.isDirectory() !== st.isDirectory()) {
        throw wrongType(shownTo, existing.isDirectory() ? 'a directory' : 'a file', st.isDirectory() ? 'a directory' : 'a file')
      }
    }
    for (const l of [fromLock, toLock]) if (l.signal.aborted) throw l.signal.reason
    await rename(fromAbs, toAbs).catch((err: unknown) => {
      if (code(err) === 'ENOTEMPTY' || code(err) === 'EEXIST') throw notEmpty(shownTo)
      throw ioError('move', shownFrom, err)
    })
    const made = created.splice(0)
    // The destination's directory (and those this move created), and the source's directory.
    await syncDirs(join(real, ...dst.slice(0, -1)), [...made, fromAbs]).catch((err: unknown) => {
      throw ioError('fsync the directories of', shownTo, err)
    })
    return { fromToken: fromLock.token, toToken: toLock.token }
  } catch (err) {
    for (const d of created.reverse()) await rmdir(d).catch(() => undefined)
    throw err
  } finally {
    await Promise.all([fromLock.release(), toLock.release()])
  }
}

/**
 * Removes a file, or a directory (with `recursive`, everything below it), under an exclusive
 * lock on the path — which waits for every write below it and holds them off meanwhile. A
 * directory disappears at once (renamed aside, then deleted). A symbolic link is removed itself.
 */
export async function removeEntry(scope: Scope, path: string, options: unknown): Promise<RemoveResult> {
  const segments = scope.resolve(path)
  const shown = scope.shown(segments)
  if (scope.isBase(segments)) throw invalidPath(path, 'must name something below the root')
  const opts = parseOptions(removeOptions, options)
  scope.ctx.assertOpen('removing a file')
  const real = await scope.ctx.root.real()
  let aside: string | null = null
  const result = await exclusive(scope, segments, opts, async (lock): Promise<RemoveResult> => {
    const parent = join(real, ...segments.slice(0, -1))
    if ((await scope.ctx.root.checkDir(real, segments.slice(0, -1), shown)) === 'missing') return { removed: false, token: lock.token }
    const abs = join(real, ...segments)
    let st: Stats
    try {
      st = await lstat(abs)
    } catch (err) {
      if (code(err) === 'ENOENT' || code(err) === 'ENOTDIR') return { removed: false, token: lock.token }
      throw ioError('inspect', shown, err)
    }
    if (lock.signal.aborted) throw lock.signal.reason
    if (!st.isDirectory()) {
      await unlink(abs).catch((err: unknown) => {
        throw ioError('remove', shown, err)
      })
    } else if (!opts.recursive) {
      await rmdir(abs).catch((err: unknown) => {
        throw code(err) === 'ENOTEMPTY' || code(err) === 'EEXIST' ? notEmpty(shown) : ioError('remove', shown, err)
      })
    } else {
      // Renamed aside first: the directory vanishes at once for every reader, and a crash
      // mid-delete leaves only a temporary name for the sweeper.
      const self = scope.ctx.members.self
      const tomb = join(parent, tempName(self.instanceId, self.epoch))
      try {
        await rename(abs, tomb)
        aside = tomb
      } catch (err) {
        if (code(err) !== 'EXDEV' && code(err) !== 'EBUSY') throw ioError('remove', shown, err)
        await rm(abs, { recursive: true, force: true }).catch((e: unknown) => {
          throw ioError('remove', shown, e)
        })
      }
    }
    await syncDir(parent).catch((err: unknown) => {
      throw ioError('fsync the directory of', shown, err)
    })
    return { removed: true, token: lock.token }
  })
  if (aside !== null) {
    const tomb: string = aside
    await rm(tomb, { recursive: true, force: true }).catch((err: unknown) => {
      scope.ctx.log.warn({ err: toError(err), path: shown }, 'a removed directory could not be deleted entirely; the sweeper finishes it')
    })
  }
  return result
}

/** Runs `fn` under an exclusive path lock on `segments`: the caller's (checked), or one taken here. */
async function exclusive<T>(scope: Scope, segments: readonly string[], opts: FileLockWait & { lock?: Lock | undefined }, fn: (lock: Lock) => Promise<T>): Promise<T> {
  const name = lockName(segments)
  if (opts.lock !== undefined) {
    checkLock(opts.lock, name)
    return fn(opts.lock)
  }
  const lock = await scope.ctx.locks.path(name, 'exclusive', { waitMs: opts.waitMs, signal: opts.signal })
  try {
    return await fn(lock)
  } finally {
    await lock.release()
  }
}

/**
 * Takes exclusive locks on two unrelated paths without ever waiting for one while holding the
 * other: wait for the first (in path order), try the second; when it is busy, let go, wait for
 * the busy one, and try the other. A cycle of waiters therefore cannot form.
 */
async function lockBoth(scope: Scope, a: readonly string[], b: readonly string[], opts: FileLockWait): Promise<[Lock, Lock]> {
  const locks = scope.ctx.locks
  const deadline = opts.waitMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + opts.waitMs
  let order: [readonly string[], readonly string[]] = compareSegments(a, b) < 0 ? [a, b] : [b, a]
  for (;;) {
    const waitMs = Number.isFinite(deadline) ? Math.max(0, deadline - Date.now()) : undefined
    const first = await locks.path(lockName(order[0]), 'exclusive', { waitMs, signal: opts.signal })
    let second: Lock | null
    try {
      second = await locks.tryPath(lockName(order[1]), 'exclusive', { signal: opts.signal })
    } catch (err) {
      await first.release()
      throw err
    }
    if (second) return order[0] === a ? [first, second] : [second, first]
    await first.release()
    order = [order[1], order[0]]
  }
}

function checkLock(lock: Lock, name: string): void {
  const why =
    lock === null || typeof lock !== 'object' || typeof lock.release !== 'function' ? 'it is not a lock'
    : !lock.path ? 'it is not a path lock (take it with files.lock())'
    : lock.mode !== 'exclusive' ? 'it is shared; an exclusive lock is needed'
    : !covers(lock.name, name) ? `it is on ${JSON.stringify(lock.name)}, which does not cover ${JSON.stringify(name)}`
    : lock.signal.aborted ? 'it was released or lost'
    : null
  if (why !== null) throw new ChorusError('CHORUS_ERR_FILES_LOCK_INVALID', [show(name.slice(name.indexOf('/') + 1)), why], { details: { reason: why } })
}

function notEmpty(path: string): ChorusError {
  return new ChorusError('CHORUS_ERR_FILES_NOT_EMPTY', [show(path)], { details: { path } })
}

