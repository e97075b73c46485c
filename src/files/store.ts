/**
 * The files API over one directory (`FileStore`): the root, or an area below it (`uploads`,
 * `exports`, `repos`), which is the same API with its paths prefixed. This class is the API's one
 * face — each method checks nothing itself and hands its scope to the module that owns the
 * operation: the changing side (change.ts: write, move, remove, under path locks), the read side
 * (read.ts: read, streams, stat; no locks, whole versions only) and listing (list.ts). A new
 * operation on an area is a method here and a module of its own.
 */
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import type { Lock, LockMode } from '../locks/lease.js'
import type { PathLockOptions } from '../locks/locks.js'
import { moveEntry, removeEntry, writeFile } from './change.js'
import { listDir } from './list.js'
import type {
  FileEntry, FileStat, ListOptions, MoveOptions, MoveResult, ReadOptions, ReadStreamOptions, RemoveOptions, RemoveResult, WriteOptions,
  WriteResult,
} from './options.js'
import { lockName } from './paths.js'
import { readFile, readStream, statPath } from './read.js'
import { fastifyServeArea, serveArea, type FileHandler, type ServeOptions } from './serve.js'
import { Scope, type FilesContext } from './scope.js'
import type { WriteData } from './write.js'

export type {
  FileEntry, FileLockWait, FileStat, FileType, ListOptions, MoveOptions, MoveResult, ReadOptions, ReadStreamOptions, RemoveOptions,
  RemoveResult, WriteOptions, WriteResult,
} from './options.js'
export type { FilesContext } from './scope.js'
export type { WriteData } from './write.js'

export class FileStore {
  /** What this store works in: the shared context and its base below the root. */
  readonly #scope: Scope

  /** @internal use `cluster.files` and `area()` */
  constructor(ctx: FilesContext, base: readonly string[]) {
    this.#scope = new Scope(ctx, base)
  }

  /** The directory this store is rooted at, as configured (absolute). */
  get directory(): string {
    return join(this.#scope.ctx.root.dir, ...this.#scope.base)
  }

  /** The same API rooted at `name` below this one (created on first write). */
  area(name: string): FileStore {
    const scope = this.#scope.area(name)
    return new FileStore(scope.ctx, scope.base)
  }

  /**
   * Serves this store over HTTP, as `express.static` would a directory: a Node http / Express
   * handler with Content-Type, ETag, Last-Modified, conditional GET, HEAD and Range, refusing
   * unsafe paths: `app.use('/uploads', cluster.files.area('uploads').serve())`. See docs/files.md.
   */
  serve(opts: ServeOptions = {}): FileHandler {
    return serveArea(this, opts)
  }

  /** The same as a Fastify plugin: `app.register(area.fastify({ prefix: '/uploads' }))`. */
  fastify(opts: ServeOptions = {}): ReturnType<typeof fastifyServeArea> {
    return fastifyServeArea(this, opts)
  }

  /**
   * Takes the path lock the files API itself takes for `path` (default exclusive), for grouping
   * several operations: pass it as `lock` to `write`/`remove`, or hold a shared one to read a
   * directory that nobody changes meanwhile. Release it when done.
   */
  lock(path: string, mode: LockMode = 'exclusive', opts: PathLockOptions = {}): Promise<Lock> {
    const segments = this.#scope.resolve(path)
    this.#scope.ctx.assertOpen('taking a files lock')
    return this.#scope.ctx.locks.path(lockName(segments), mode, opts)
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
  write(path: string, data: WriteData, opts: WriteOptions = {}): Promise<WriteResult> {
    return writeFile(this.#scope, path, data, opts)
  }

  /** Reads a whole file. Takes no lock: files are replaced atomically, so this is one whole version. */
  read(path: string, opts: ReadOptions = {}): Promise<Buffer> {
    return readFile(this.#scope, path, opts)
  }

  /** A stream of a file's bytes (one whole version, as for `read`). */
  createReadStream(path: string, opts: ReadStreamOptions = {}): Promise<Readable> {
    return readStream(this.#scope, path, opts)
  }

  /** What is at `path`, or `null` when nothing is. A symbolic link is refused (`CHORUS_ERR_FILES_SYMLINK`). */
  stat(path: string): Promise<FileStat | null> {
    return statPath(this.#scope, path)
  }

  /** The entries of a directory, sorted by name (temporary files never appear). */
  list(path = '', opts: ListOptions = {}): Promise<FileEntry[]> {
    return listDir(this.#scope, path, opts)
  }

  /**
   * Moves a file or directory (rename, atomic), creating the destination's directories. Holds
   * exclusive path locks on both paths; it never waits for one while holding the other, so
   * concurrent moves cannot deadlock.
   */
  move(from: string, to: string, opts: MoveOptions = {}): Promise<MoveResult> {
    return moveEntry(this.#scope, from, to, opts)
  }

  /**
   * Removes a file, or a directory (with `recursive`, everything below it), under an exclusive
   * lock on the path — which waits for every write below it and holds them off meanwhile. A
   * directory disappears at once (renamed aside, then deleted). A symbolic link is removed itself.
   */
  remove(path: string, opts: RemoveOptions = {}): Promise<RemoveResult> {
    return removeEntry(this.#scope, path, opts)
  }
}
