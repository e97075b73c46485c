/**
 * The files API over one directory: the root, or an area below it (`uploads`, `exports`, `repos`),
 * which is the same API with its paths prefixed. Every change runs under an exclusive path lock on
 * what it changes (with intention locks on the ancestors), so a write of `a/b/f` and a removal of
 * `a/b` never interleave on any instance; reads take no lock, and see whole files only.
 */
import { constants, type Stats } from 'node:fs'
import { lstat, open, readdir, rename, rm, rmdir, unlink, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import type { Logger } from 'pino'
import { ChorusError, toError } from '../errors.js'
import type { Lock, LockMode } from '../locks/lease.js'
import type { Locks, PathLockOptions } from '../locks/locks.js'
import type { Membership } from '../membership/membership.js'
import {
  compareSegments, covers, invalidPath, isAncestorOrSelf, lockName, MAX_PATH_BYTES, MAX_SEGMENTS, parseArea, parsePath,
  RESERVED_PREFIX, show, tempName,
} from './paths.js'
import { code, ioError, notFound, symlinkError, syncDir, syncDirs, wrongType, type Root } from './root.js'
import { knownSize, writeAtomic, type WriteData } from './write.js'

export type { WriteData } from './write.js'

/** What every store of one cluster shares. */
export interface FilesContext {
  readonly root: Root
  readonly locks: Locks
  readonly members: Membership
  readonly log: Logger
  readonly maxFileBytes: number
  /** Throws `CHORUS_ERR_CLUSTER_CLOSED` once the subsystem is closed. */
  assertOpen(what: string): void
}

/** Options of the changing operations: how long to wait for the path lock, and a way to give up. */
export interface FileLockWait {
  /** Longest wait for the path lock before `CHORUS_ERR_LOCK_TIMEOUT`. Default: no limit. */
  waitMs?: number
  /** Aborts the wait (and a write in progress); rejects with the signal's reason. */
  signal?: AbortSignal
}

export interface WriteOptions extends FileLockWait {
  /** Largest accepted size; the stream is cut off as soon as it passes it. Default: option `files.maxFileBytes`. */
  maxBytes?: number
  /** Replace an existing file. Default: `true`; with `false`, an existing file fails with `CHORUS_ERR_FILES_EXISTS`. */
  overwrite?: boolean
  /**
   * An exclusive lock from `files.lock()` on this path or an ancestor, already held by the caller:
   * the write runs under it instead of taking its own (and does not release it).
   */
  lock?: Lock
}

export interface WriteResult {
  /** The normalised path, relative to this store. */
  readonly path: string
  readonly size: number
  /** Hex SHA-256 of the bytes written. */
  readonly sha256: string
  /** Fencing token of the path lock the write ran under. */
  readonly token: bigint
}

export interface ReadOptions {
  /** Larger files fail with `CHORUS_ERR_FILES_TOO_LARGE` instead of being read into memory. Default: option `files.maxFileBytes`. */
  maxBytes?: number
}

export interface ReadStreamOptions {
  /** First byte to read. Default: 0. */
  start?: number
  /** Last byte to read, inclusive. Default: the end of the file. */
  end?: number
}

export type FileType = 'file' | 'directory' | 'symlink' | 'other'

export interface FileStat {
  /** The normalised path, relative to this store. */
  readonly path: string
  readonly type: FileType
  readonly size: number
  readonly mtime: Date
}

export interface FileEntry extends FileStat {
  readonly name: string
}

export interface ListOptions {
  /** A directory with more entries fails with `CHORUS_ERR_FILES_TOO_MANY_ENTRIES`. Default: 10 000. */
  limit?: number
}

export interface MoveOptions extends FileLockWait {
  /** Replace an existing destination of the same type. Default: `false` (`CHORUS_ERR_FILES_EXISTS`). */
  overwrite?: boolean
}

export interface MoveResult {
  /** Fencing tokens of the two path locks the move ran under. */
  readonly fromToken: bigint
  readonly toToken: bigint
}

export interface RemoveOptions extends FileLockWait {
  /** Remove a directory with everything below it. Default: `false` (a non-empty directory fails with `CHORUS_ERR_FILES_NOT_EMPTY`). */
  recursive?: boolean
  /** As for `write`: an exclusive `files.lock()` on this path or an ancestor, held by the caller. */
  lock?: Lock
}

export interface RemoveResult {
  /** False when there was nothing at the path. */
  readonly removed: boolean
  readonly token: bigint
}

const DEFAULT_LIST_LIMIT = 10_000

export class FileStore {
  readonly #ctx: FilesContext
  readonly #base: readonly string[]

  /** @internal use `cluster.files` and `area()` */
  constructor(ctx: FilesContext, base: readonly string[]) {
    this.#ctx = ctx
    this.#base = base
  }

  /** The directory this store is rooted at, as configured (absolute). */
  get directory(): string {
    return join(this.#ctx.root.dir, ...this.#base)
  }

  /** The same API rooted at `name` below this one (created on first write). */
  area(name: string): FileStore {
    const segments = this.#base.concat(parseArea(name))
    checkTotal(name, segments)
    return new FileStore(this.#ctx, segments)
  }

  /**
   * Takes the path lock the files API itself takes for `path` (default exclusive), for grouping
   * several operations: pass it as `lock` to `write`/`remove`, or hold a shared one to read a
   * directory that nobody changes meanwhile. Release it when done.
   */
  lock(path: string, mode: LockMode = 'exclusive', opts: PathLockOptions = {}): Promise<Lock> {
    const segments = this.#resolve(path)
    this.#ctx.assertOpen('taking a files lock')
    return this.#ctx.locks.path(lockName(segments), mode, opts)
  }

  /** Runs `fn` holding `lock(path, mode)`, and releases it however `fn` ends. */
  async withLock<T>(path: string, mode: LockMode, fn: (lock: Lock) => T | Promise<T>, opts: PathLockOptions = {}): Promise<T> {
    const lock = await this.lock(path, mode, opts)
    try {
      return await fn(lock)
    } finally {
      await lock.release()
    }
  }

  /**
   * Writes a file atomically under an exclusive path lock, creating its directories: readers see
   * the old content or the new, never a part. `data` may be a stream; it is cut off past `maxBytes`
   * (`CHORUS_ERR_FILES_TOO_LARGE`, nothing written).
   */
  async write(path: string, data: WriteData, opts: WriteOptions = {}): Promise<WriteResult> {
    const segments = this.#resolve(path)
    const shown = this.#shown(segments)
    if (segments.length === this.#base.length) throw invalidPath(path, 'must name a file below the root')
    const maxBytes = limit(opts.maxBytes, this.#ctx.maxFileBytes, 'maxBytes')
    const size = knownSize(data)
    if (size !== null && size > maxBytes) {
      throw new ChorusError('CHORUS_ERR_FILES_TOO_LARGE', [show(shown), maxBytes], { details: { path: shown, maxBytes } })
    }
    this.#ctx.assertOpen('writing a file')
    const real = await this.#ctx.root.real()
    return this.#exclusive(segments, opts, async (lock) => {
      const self = this.#ctx.members.self
      const r = await writeAtomic({
        root: this.#ctx.root, real, segments, path: shown, data, maxBytes, overwrite: opts.overwrite ?? true, lock,
        signal: opts.signal, instanceId: self.instanceId, epoch: self.epoch,
      })
      return { path: this.#shown(segments), size: r.size, sha256: r.sha256, token: lock.token }
    })
  }

  /** Reads a whole file. Takes no lock: files are replaced atomically, so this is one whole version. */
  async read(path: string, opts: ReadOptions = {}): Promise<Buffer> {
    const maxBytes = limit(opts.maxBytes, this.#ctx.maxFileBytes, 'maxBytes')
    const { fh, shown, stats } = await this.#openFile(path)
    try {
      if (stats.size > maxBytes) throw new ChorusError('CHORUS_ERR_FILES_TOO_LARGE', [show(shown), maxBytes], { details: { path: shown, maxBytes } })
      return await fh.readFile()
    } catch (err) {
      throw ioError('read', shown, err)
    } finally {
      await fh.close().catch(() => undefined)
    }
  }

  /** A stream of a file's bytes (one whole version, as for `read`). */
  async createReadStream(path: string, opts: ReadStreamOptions = {}): Promise<Readable> {
    const { fh } = await this.#openFile(path)
    return fh.createReadStream({ start: opts.start, end: opts.end, autoClose: true })
  }

  /** What is at `path`, or `null` when nothing is. A symbolic link is refused (`CHORUS_ERR_FILES_SYMLINK`). */
  async stat(path: string): Promise<FileStat | null> {
    const segments = this.#resolve(path)
    const shown = this.#shown(segments)
    this.#ctx.assertOpen('reading a file')
    const real = await this.#ctx.root.real()
    if (segments.length === 0) return describe(shown, await lstat(real))
    if ((await this.#ctx.root.checkDir(real, segments.slice(0, -1), shown)) === 'missing') return null
    let st: Stats
    try {
      st = await lstat(join(real, ...segments))
    } catch (err) {
      if (code(err) === 'ENOENT' || code(err) === 'ENOTDIR') return null
      throw ioError('inspect', shown, err)
    }
    if (st.isSymbolicLink()) throw symlinkError(shown, shown)
    return describe(shown, st)
  }

  /** The entries of a directory, sorted by name (temporary files never appear). */
  async list(path = '', opts: ListOptions = {}): Promise<FileEntry[]> {
    const segments = this.#resolve(path)
    const shown = this.#shown(segments)
    const max = limit(opts.limit, DEFAULT_LIST_LIMIT, 'limit')
    this.#ctx.assertOpen('listing a directory')
    const real = await this.#ctx.root.real()
    if ((await this.#ctx.root.checkDir(real, segments, shown)) === 'missing') throw notFound(shown)
    const dir = join(real, ...segments)
    let names: string[]
    try {
      names = (await readdir(dir)).filter((n) => !n.startsWith(RESERVED_PREFIX))
    } catch (err) {
      if (code(err) === 'ENOENT') throw notFound(shown)
      if (code(err) === 'ENOTDIR') throw wrongType(shown, 'a file', 'a directory')
      throw ioError('list', shown, err)
    }
    if (names.length > max) {
      throw new ChorusError('CHORUS_ERR_FILES_TOO_MANY_ENTRIES', [show(shown), max], { details: { path: shown, limit: max } })
    }
    names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    const prefix = segments.slice(this.#base.length)
    const out: FileEntry[] = []
    for (const name of names) {
      let st: Stats
      try {
        st = await lstat(join(dir, name))
      } catch {
        continue // gone meanwhile
      }
      out.push({ name, ...describe([...prefix, name].join('/'), st) })
    }
    return out
  }

  /**
   * Moves a file or directory (rename, atomic), creating the destination's directories. Holds
   * exclusive path locks on both paths; it never waits for one while holding the other, so
   * concurrent moves cannot deadlock.
   */
  async move(from: string, to: string, opts: MoveOptions = {}): Promise<MoveResult> {
    const src = this.#resolve(from)
    const dst = this.#resolve(to)
    const shownFrom = this.#shown(src)
    const shownTo = this.#shown(dst)
    if (src.length === this.#base.length || dst.length === this.#base.length) throw invalidPath(src.length === this.#base.length ? from : to, 'must name something below the root')
    if (isAncestorOrSelf(src, dst) || isAncestorOrSelf(dst, src)) {
      throw invalidPath(to, `is ${compareSegments(src, dst) === 0 ? 'the same path as' : 'inside or above'} ${show(shownFrom)}`)
    }
    this.#ctx.assertOpen('moving a file')
    const real = await this.#ctx.root.real()
    const [fromLock, toLock] = await this.#lockBoth(src, dst, opts)
    const created: string[] = []
    try {
      const root = this.#ctx.root
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
        if (code(err) === 'ENOTDIR') throw wrongType(this.#shown(dst.slice(0, -1)), 'a file', 'a directory')
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
  async remove(path: string, opts: RemoveOptions = {}): Promise<RemoveResult> {
    const segments = this.#resolve(path)
    const shown = this.#shown(segments)
    if (segments.length === this.#base.length) throw invalidPath(path, 'must name something below the root')
    this.#ctx.assertOpen('removing a file')
    const real = await this.#ctx.root.real()
    let aside: string | null = null
    const result = await this.#exclusive(segments, opts, async (lock): Promise<RemoveResult> => {
      const parent = join(real, ...segments.slice(0, -1))
      if ((await this.#ctx.root.checkDir(real, segments.slice(0, -1), shown)) === 'missing') return { removed: false, token: lock.token }
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
        const self = this.#ctx.members.self
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
        this.#ctx.log.warn({ err: toError(err), path: shown }, 'a removed directory could not be deleted entirely; the sweeper finishes it')
      })
    }
    return result
  }

  // ---- internals -------------------------------------------------------------------------------

  #resolve(path: string): string[] {
    const segments = this.#base.concat(parsePath(path))
    checkTotal(path, segments)
    return segments
  }

  /** A path as users of this store know it (relative to it). */
  #shown(segments: readonly string[]): string {
    return segments.slice(this.#base.length).join('/') || '.'
  }

  async #openFile(path: string): Promise<{ fh: FileHandle; shown: string; stats: Stats }> {
    const segments = this.#resolve(path)
    const shown = this.#shown(segments)
    if (segments.length === this.#base.length) throw wrongType(shown, 'a directory', 'a file')
    this.#ctx.assertOpen('reading a file')
    const real = await this.#ctx.root.real()
    if ((await this.#ctx.root.checkDir(real, segments.slice(0, -1), shown)) === 'missing') throw notFound(shown)
    let fh: FileHandle
    try {
      fh = await open(join(real, ...segments), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
    } catch (err) {
      switch (code(err)) {
        case 'ENOENT':
          throw notFound(shown)
        case 'ELOOP':
          throw symlinkError(shown, shown)
        case 'ENOTDIR':
          throw wrongType(segments.slice(this.#base.length, -1).join('/'), 'a file', 'a directory')
        default:
          throw ioError('open', shown, err)
      }
    }
    const stats = await fh.stat()
    if (!stats.isFile()) {
      await fh.close().catch(() => undefined)
      throw wrongType(shown, stats.isDirectory() ? 'a directory' : 'a special file', 'a file')
    }
    return { fh, shown, stats }
  }

  /** Runs `fn` under an exclusive path lock on `segments`: the caller's (checked), or one taken here. */
  async #exclusive<T>(segments: readonly string[], opts: FileLockWait & { lock?: Lock }, fn: (lock: Lock) => Promise<T>): Promise<T> {
    const name = lockName(segments)
    if (opts.lock !== undefined) {
      checkLock(opts.lock, name)
      return fn(opts.lock)
    }
    const lock = await this.#ctx.locks.path(name, 'exclusive', { waitMs: opts.waitMs, signal: opts.signal })
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
  async #lockBoth(a: readonly string[], b: readonly string[], opts: FileLockWait): Promise<[Lock, Lock]> {
    const locks = this.#ctx.locks
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
}

function checkTotal(input: string, segments: readonly string[]): void {
  if (segments.length > MAX_SEGMENTS) throw invalidPath(input, `has more than ${MAX_SEGMENTS} segments with its area`)
  if (Buffer.byteLength(segments.join('/')) > MAX_PATH_BYTES) throw invalidPath(input, `is longer than ${MAX_PATH_BYTES} bytes with its area`)
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

function limit(value: unknown, fallback: number, option: string): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', [option, 'must be a whole number ≥ 0'], { details: { option } })
  }
  return value
}

function notEmpty(path: string): ChorusError {
  return new ChorusError('CHORUS_ERR_FILES_NOT_EMPTY', [show(path)], { details: { path } })
}

function describe(path: string, st: Stats): FileStat {
  const type: FileType = st.isFile() ? 'file' : st.isDirectory() ? 'directory' : st.isSymbolicLink() ? 'symlink' : 'other'
  return { path, type, size: st.size, mtime: st.mtime }
}
