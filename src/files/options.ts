/**
 * The per-call options and results of the files API, each options object one strict schema (its
 * type derived from it). A bad option fails with `CHORUS_ERR_OPTIONS_INVALID` naming it, before
 * anything is locked or touched; `waitMs` and `signal` are the path lock's own and are checked by
 * the locks (`CHORUS_ERR_LOCK_OPTIONS_INVALID`), `lock` by the operation that uses it
 * (`CHORUS_ERR_FILES_LOCK_INVALID`).
 */
import { z } from 'zod'
import type { Lock } from '../locks/lease.js'

const WHOLE = 'must be a whole number ≥ 0'
const whole = z.int({ error: WHOLE }).min(0, { error: WHOLE })
const flag = z.boolean({ error: 'must be true or false' })
/** Checked where it is used (the locks; the operation that takes a `lock`). */
const checkedLater = <T>() => z.custom<T>()

const lockWait = {
  /** Longest wait for the path lock before `CHORUS_ERR_LOCK_TIMEOUT`. Default: no limit. */
  waitMs: checkedLater<number>().optional(),
  /** Aborts the wait (and a write in progress); rejects with the signal's reason. */
  signal: checkedLater<AbortSignal>().optional(),
}

const fileLockWait = z.strictObject(lockWait)

export const writeOptions = z.strictObject({
  ...lockWait,
  /** Largest accepted size; the stream is cut off as soon as it passes it. Default: option `files.maxFileBytes`. */
  maxBytes: whole.optional(),
  /** Replace an existing file. Default: `true`; with `false`, an existing file fails with `CHORUS_ERR_FILES_EXISTS`. */
  overwrite: flag.optional(),
  /**
   * An exclusive lock from `files.lock()` on this path or an ancestor, already held by the caller:
   * the write runs under it instead of taking its own (and does not release it).
   */
  lock: checkedLater<Lock>().optional(),
})

export const readOptions = z.strictObject({
  /** Larger files fail with `CHORUS_ERR_FILES_TOO_LARGE` instead of being read into memory. Default: option `files.maxFileBytes`. */
  maxBytes: whole.optional(),
})

export const readStreamOptions = z.strictObject({
  /** First byte to read. Default: 0. */
  start: whole.optional(),
  /** Last byte to read, inclusive. Default: the end of the file. */
  end: whole.optional(),
})

export const listOptions = z.strictObject({
  /** A directory with more entries fails with `CHORUS_ERR_FILES_TOO_MANY_ENTRIES`. Default: 10 000. */
  limit: whole.optional(),
})

export const moveOptions = z.strictObject({
  ...lockWait,
  /** Replace an existing destination of the same type. Default: `false` (`CHORUS_ERR_FILES_EXISTS`). */
  overwrite: flag.optional(),
})

export const removeOptions = z.strictObject({
  ...lockWait,
  /** Remove a directory with everything below it. Default: `false` (a non-empty directory fails with `CHORUS_ERR_FILES_NOT_EMPTY`). */
  recursive: flag.optional(),
  /** As for `write`: an exclusive `files.lock()` on this path or an ancestor, held by the caller. */
  lock: checkedLater<Lock>().optional(),
})

/** Options of the changing operations: how long to wait for the path lock, and a way to give up. */
export type FileLockWait = z.input<typeof fileLockWait>
export type WriteOptions = z.input<typeof writeOptions>
export type ReadOptions = z.input<typeof readOptions>
export type ReadStreamOptions = z.input<typeof readStreamOptions>
export type ListOptions = z.input<typeof listOptions>
export type MoveOptions = z.input<typeof moveOptions>
export type RemoveOptions = z.input<typeof removeOptions>

export interface WriteResult {
  /** The normalised path, relative to this store. */
  readonly path: string
  readonly size: number
  /** Hex SHA-256 of the bytes written. */
  readonly sha256: string
  /** Fencing token of the path lock the write ran under. */
  readonly token: bigint
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

export interface MoveResult {
  /** Fencing tokens of the two path locks the move ran under. */
  readonly fromToken: bigint
  readonly toToken: bigint
}

export interface RemoveResult {
  /** False when there was nothing at the path. */
  readonly removed: boolean
  readonly token: bigint
}
