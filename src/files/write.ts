/**
 * The atomic write: bytes go to a temporary file in the target's own directory, are hashed and
 * counted on the way (the size limit cuts a stream off at once), fsynced, renamed over the target
 * and the directory fsynced. Until the rename nothing is visible under the target's name; on any
 * failure the temporary file and the directories this write created are removed again.
 */
import { createHash } from 'node:crypto'
import { constants } from 'node:fs'
import { lstat, open, rename, rmdir, unlink, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { ChorusError } from '../errors.js'
import type { Lock } from '../locks/lease.js'
import { LinkedSignal, untilAborted } from '../util/abort.js'
import { show, tempName } from './paths.js'
import { code, ioError, symlinkError, syncDirs, wrongType, type Root } from './root.js'

/** What `write` accepts: the bytes themselves, or any stream / async iterable of chunks. */
export type WriteData = string | Uint8Array | NodeJS.ReadableStream | AsyncIterable<Uint8Array | string>

export interface AtomicWrite {
  readonly root: Root
  readonly real: string
  readonly segments: readonly string[]
  /** The path as shown in errors. */
  readonly path: string
  readonly data: WriteData
  readonly maxBytes: number
  readonly overwrite: boolean
  /** The exclusive path lock this write runs under; the rename happens only while it holds. */
  readonly lock: Lock
  readonly signal: AbortSignal | undefined
  readonly instanceId: string
  readonly epoch: number
}

/** The size of data whose size is known before streaming, else `null`. */
export function knownSize(data: WriteData): number | null {
  if (typeof data === 'string') return Buffer.byteLength(data)
  if (data instanceof Uint8Array) return data.byteLength
  return null
}

export async function writeAtomic(w: AtomicWrite): Promise<{ size: number; sha256: string }> {
  const dirSegments = w.segments.slice(0, -1)
  const dir = join(w.real, ...dirSegments)
  const target = join(dir, w.segments[w.segments.length - 1]!)
  const created: string[] = []
  let tmp: string | null = null
  let fh: FileHandle | null = null
  const source = chunks(w.data, w.path)[Symbol.asyncIterator]()
  try {
    stopIfAsked(w)
    // A concurrent failed write may remove a directory it created just as this one starts: retry.
    for (let attempt = 0; ; attempt++) {
      created.push(...(await w.root.ensureDir(w.real, dirSegments, w.path)))
      const existing = await lstat(target).catch((err: unknown) => {
        if (code(err) === 'ENOENT') return null
        if (code(err) === 'ENOTDIR') throw wrongType(dirSegments.join('/'), 'a file', 'a directory')
        throw ioError('inspect', w.path, err)
      })
      if (existing?.isSymbolicLink()) throw symlinkError(w.path, w.path)
      if (existing?.isDirectory()) throw wrongType(w.path, 'a directory', 'a file')
      if (existing && !w.overwrite) throw new ChorusError('CHORUS_ERR_FILES_EXISTS', [show(w.path)], { details: { path: w.path } })
      tmp = join(dir, tempName(w.instanceId, w.epoch))
      try {
        fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o666)
        break
      } catch (err) {
        tmp = null
        if (code(err) === 'ENOENT' && attempt < 5) continue
        if (code(err) === 'ENOTDIR') throw wrongType(dirSegments.join('/'), 'a file', 'a directory')
        throw ioError('create', w.path, err)
      }
    }
    const hash = createHash('sha256')
    let size = 0
    // A stalled stream must not pin the write: stop waiting when the lock is lost or the caller aborts.
    const stop = new LinkedSignal([w.lock.signal, w.signal])
    try {
      for (;;) {
        let next: IteratorResult<Buffer>
        try {
          next = await untilAborted(source.next(), stop.signal)
        } catch (err) {
          if (err instanceof ChorusError || isStopReason(err, w)) throw err
          throw ioError('read the data for', w.path, err)
        }
        if (next.done) break
        const chunk = next.value
        size += chunk.byteLength
        if (size > w.maxBytes) {
          throw new ChorusError('CHORUS_ERR_FILES_TOO_LARGE', [show(w.path), w.maxBytes], { details: { path: w.path, maxBytes: w.maxBytes } })
        }
        hash.update(chunk)
        await writeAll(fh, chunk).catch((err: unknown) => {
          throw ioError('write', w.path, err)
        })
        stopIfAsked(w)
      }
    } finally {
      stop.dispose()
    }
    await fh.sync().catch((err: unknown) => {
      throw ioError('fsync', w.path, err)
    })
    const handle = fh
    fh = null
    await handle.close()
    // Last check before the point of no return: the lock must still be ours.
    stopIfAsked(w)
    await rename(tmp!, target).catch((err: unknown) => {
      if (code(err) === 'EISDIR') throw wrongType(w.path, 'a directory', 'a file')
      throw ioError('rename', w.path, err)
    })
    tmp = null
    await syncDirs(dir, created).catch((err: unknown) => {
      throw ioError('fsync the directory of', w.path, err)
    })
    return { size, sha256: hash.digest('hex') }
  } catch (err) {
    // A stalled stream would keep `return()` waiting: destroy the stream itself, and do not wait.
    const stream = w.data as { destroy?: (err?: Error) => void }
    if (typeof stream.destroy === 'function') stream.destroy()
    void source.return?.(undefined).catch(() => undefined)
    await (fh as FileHandle | null)?.close().catch(() => undefined)
    if (tmp !== null) await unlink(tmp).catch(() => undefined)
    for (const d of created.reverse()) await rmdir(d).catch(() => undefined)
    throw err
  }
}

/** Refuses (`CHORUS_ERR_FILES_DATA_INVALID`) data that is neither bytes, text, a stream nor an async iterable. */
export function checkData(data: unknown, path: string): asserts data is WriteData {
  if (typeof data === 'string' || data instanceof Uint8Array) return
  if (data === null || typeof data !== 'object' || typeof (data as AsyncIterable<unknown>)[Symbol.asyncIterator] !== 'function') {
    throw invalidData(path, 'it must be a string, a Uint8Array, a readable stream or an async iterable of chunks')
  }
}

async function* chunks(data: WriteData, path: string): AsyncGenerator<Buffer> {
  checkData(data, path)
  if (typeof data === 'string') {
    yield Buffer.from(data)
    return
  }
  if (data instanceof Uint8Array) {
    yield Buffer.from(data.buffer, data.byteOffset, data.byteLength)
    return
  }
  for await (const chunk of data as AsyncIterable<unknown>) {
    if (typeof chunk === 'string') yield Buffer.from(chunk)
    else if (chunk instanceof Uint8Array) yield Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
    else throw invalidData(path, `the data stream yielded a ${typeof chunk}; expected bytes or strings (is it in object mode?)`)
  }
}

function invalidData(path: string, why: string): ChorusError {
  return new ChorusError('CHORUS_ERR_FILES_DATA_INVALID', [show(path), why], { details: { path, reason: why } })
}

async function writeAll(fh: FileHandle, chunk: Buffer): Promise<void> {
  let offset = 0
  while (offset < chunk.byteLength) {
    const { bytesWritten } = await fh.write(chunk, offset, chunk.byteLength - offset)
    offset += bytesWritten
  }
}

function stopIfAsked(w: AtomicWrite): void {
  if (w.lock.signal.aborted) throw w.lock.signal.reason
  if (w.signal?.aborted) throw w.signal.reason
}

function isStopReason(err: unknown, w: AtomicWrite): boolean {
  return (w.lock.signal.aborted && err === w.lock.signal.reason) || (!!w.signal?.aborted && err === w.signal.reason)
}
