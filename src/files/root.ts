/**
 * The root directory on disk and the only ways below it. Symbolic links are never followed: a
 * directory is used only when its real path is exactly the root's real path joined with the
 * segments, directories are created one level at a time under a checked parent, and final names
 * are opened with O_NOFOLLOW — so no path, however crafted, reaches outside the root.
 */
import { constants, type Stats } from 'node:fs'
import { lstat, mkdir, open, realpath } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { ChorusError, toError } from '../errors.js'
import { show } from './paths.js'

export class Root {
  /** The configured root, as given. */
  readonly dir: string
  #real: Promise<string> | null = null

  constructor(dir: string) {
    this.dir = dir
  }

  /** The root's real path, creating the root on first use. */
  real(): Promise<string> {
    this.#real ??= (async () => {
      await mkdir(this.dir, { recursive: true })
      return realpath(this.dir)
    })().catch((err: unknown) => {
      this.#real = null
      throw ioError('open the root', this.dir, err)
    })
    return this.#real
  }

  /** The root's real path, or `null` while the root does not exist (nothing to sweep yet). */
  async realIfExists(): Promise<string | null> {
    if (this.#real) return this.#real
    try {
      await lstat(this.dir)
    } catch (err) {
      if (code(err) === 'ENOENT') return null
      throw err
    }
    return this.real()
  }

  /**
   * Checks that the directory at `segments` is reached without a symbolic link. `missing` when it
   * (or an ancestor) does not exist; throws `CHORUS_ERR_FILES_SYMLINK` or `…_WRONG_TYPE`.
   */
  async checkDir(real: string, segments: readonly string[], path: string): Promise<'ok' | 'missing'> {
    if (segments.length === 0) return 'ok'
    const expected = join(real, ...segments)
    try {
      if ((await realpath(expected)) === expected) return 'ok'
    } catch (err) {
      if (!['ENOENT', 'ENOTDIR', 'ELOOP'].includes(code(err) ?? '')) throw ioError('resolve', path, err)
    }
    // Something is off: find out what, component by component.
    const missingAt = await this.#walk(real, segments, path, false)
    return missingAt === null ? 'ok' : 'missing'
  }

  /**
   * Makes sure the directory at `segments` exists, creating what is missing; returns the
   * directories it created, shallowest first. Never creates anything through a symbolic link.
   */
  async ensureDir(real: string, segments: readonly string[], path: string): Promise<string[]> {
    if (segments.length === 0) return []
    const expected = join(real, ...segments)
    try {
      if ((await realpath(expected)) === expected) return []
    } catch (err) {
      if (!['ENOENT', 'ENOTDIR', 'ELOOP'].includes(code(err) ?? '')) throw ioError('resolve', path, err)
    }
    const created: string[] = []
    await this.#walk(real, segments, path, true, created)
    return created
  }

  /**
   * Walks `segments` with lstat. Returns the index of the first missing component (or `null`), or,
   * with `create`, creates the missing ones. Throws on a symbolic link or a non-directory.
   */
  async #walk(real: string, segments: readonly string[], path: string, create: boolean, created: string[] = []): Promise<number | null> {
    let at = real
    for (let i = 0; i < segments.length; i++) {
      at = join(at, segments[i]!)
      let st = await lstatOrNull(at, path)
      if (st === null) {
        if (!create) return i
        try {
          await mkdir(at)
          created.push(at)
          continue
        } catch (err) {
          if (code(err) !== 'EEXIST') throw ioError('create directory', path, err)
          st = await lstatOrNull(at, path)
          if (st === null) throw ioError('create directory', path, err)
        }
      }
      const where = segments.slice(0, i + 1).join('/')
      if (st.isSymbolicLink()) throw symlinkError(path, where)
      if (!st.isDirectory()) throw wrongType(where, 'a file', 'a directory')
    }
    return null
  }
}

async function lstatOrNull(at: string, path: string): Promise<Stats | null> {
  try {
    return await lstat(at)
  } catch (err) {
    if (code(err) === 'ENOENT') return null
    throw ioError('inspect', path, err)
  }
}

/** fsyncs a directory, so the entries just made in it survive a crash. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY)
  try {
    await fh.sync()
  } catch (err) {
    // Some file systems cannot fsync a directory; their renames are then as durable as they get.
    if (!['EINVAL', 'ENOTSUP', 'EBADF', 'EISDIR'].includes(code(err) ?? '')) throw err
  } finally {
    await fh.close()
  }
}

/** fsyncs `dir` and the parent of every directory in `created`. */
export async function syncDirs(dir: string, created: readonly string[]): Promise<void> {
  const dirs = new Set([dir, ...created.map((c) => dirname(c))])
  for (const d of dirs) await syncDir(d)
}

export function code(err: unknown): string | undefined {
  const c = (err as { code?: unknown } | null)?.code
  return typeof c === 'string' ? c : undefined
}

export function symlinkError(path: string, where: string): ChorusError {
  return new ChorusError('CHORUS_ERR_FILES_SYMLINK', [show(path), show(where)], { details: { path, at: where } })
}

export function wrongType(path: string, is: string, expected: string): ChorusError {
  return new ChorusError('CHORUS_ERR_FILES_WRONG_TYPE', [show(path), is, expected], { details: { path, is, expected } })
}

export function notFound(path: string): ChorusError {
  return new ChorusError('CHORUS_ERR_FILES_NOT_FOUND', [show(path)], { details: { path } })
}

/** Wraps a file-system failure; a ChorusError passes through unchanged. */
export function ioError(op: string, path: string, err: unknown): ChorusError {
  if (err instanceof ChorusError) return err
  const e = toError(err)
  return new ChorusError('CHORUS_ERR_FILES_IO', [op, show(path), e.message], { cause: err, details: { op, path, errno: code(err) ?? null } })
}
