/**
 * The read side of the files API: whole reads, streams and stat. Reads take no lock: files are
 * replaced atomically, so an open file is one whole version, old or new. A file is opened with
 * O_NOFOLLOW below a checked directory, so a read never leaves the root.
 */
import { constants, type Stats } from 'node:fs'
import { lstat, open, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { ChorusError } from '../errors.js'
import { parseOptions } from '../util/parse-options.js'
import { readOptions, readStreamOptions, type FileStat, type FileType } from './options.js'
import { show } from './paths.js'
import { code, ioError, notFound, symlinkError, wrongType } from './root.js'
import type { Scope } from './scope.js'

/** Reads a whole file, refusing one larger than `maxBytes`. */
export async function readFile(scope: Scope, path: string, opts: unknown): Promise<Buffer> {
  const maxBytes = parseOptions(readOptions, opts).maxBytes ?? scope.ctx.maxFileBytes
  const { fh, shown, stats } = await openFile(scope, path)
  try {
    if (stats.size > maxBytes) throw new ChorusError('CHORUS_ERR_FILES_TOO_LARGE', [show(shown), maxBytes], { details: { path: shown, maxBytes } })
    return await fh.readFile()
  } catch (err) {
    throw ioError('read', shown, err)
  } finally {
    await fh.close().catch(() => undefined)
  }
}

/** A stream of a file's bytes, `start` to `end` inclusive; it closes the file when done. */
export async function readStream(scope: Scope, path: string, opts: unknown): Promise<Readable> {
  const { start, end } = parseOptions(readStreamOptions, opts)
  const { fh } = await openFile(scope, path)
  return fh.createReadStream({ start, end, autoClose: true })
}

/** What is at `path`, or `null` when nothing is. A symbolic link is refused (`CHORUS_ERR_FILES_SYMLINK`). */
export async function statPath(scope: Scope, path: string): Promise<FileStat | null> {
  const segments = scope.resolve(path)
  const shown = scope.shown(segments)
  scope.ctx.assertOpen('reading a file')
  const real = await scope.ctx.root.real()
  if (segments.length === 0) return describe(shown, await lstat(real))
  if ((await scope.ctx.root.checkDir(real, segments.slice(0, -1), shown)) === 'missing') return null
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

/** What a directory entry or stat reports, for users. */
export function describe(path: string, st: Stats): FileStat {
  const type: FileType = st.isFile() ? 'file' : st.isDirectory() ? 'directory' : st.isSymbolicLink() ? 'symlink' : 'other'
  return { path, type, size: st.size, mtime: st.mtime }
}

async function openFile(scope: Scope, path: string): Promise<{ fh: FileHandle; shown: string; stats: Stats }> {
  const segments = scope.resolve(path)
  const shown = scope.shown(segments)
  if (scope.isBase(segments)) throw wrongType(shown, 'a directory', 'a file')
  scope.ctx.assertOpen('reading a file')
  const real = await scope.ctx.root.real()
  if ((await scope.ctx.root.checkDir(real, segments.slice(0, -1), shown)) === 'missing') throw notFound(shown)
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
        throw wrongType(segments.slice(scope.base.length, -1).join('/'), 'a file', 'a directory')
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
