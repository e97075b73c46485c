/**
 * File paths as users give them, and the names Chorus derives from them: the normalised segments,
 * the path lock that guards them, and the names of temporary files. A path is relative to its
 * root, `/`-separated; `.` and empty segments are dropped, anything that could leave the root
 * (`..`, an absolute path, a drive letter, a backslash, NUL) is refused before any file is touched.
 */
import { randomBytes } from 'node:crypto'
import { ChorusError } from '../errors.js'

/** Path locks of the files subsystem live under this first segment, apart from applications' own. */
export const LOCK_ROOT = 'files'
/** Segments starting with this are Chorus's own (temporary files); users can neither name nor see them. */
export const RESERVED_PREFIX = '.chorus-'
const TEMP_PREFIX = '.chorus-tmp.'
const TEMP_NAME = /^\.chorus-tmp\.(\d{1,15})\.([0-9a-f]{12})\.(.+)$/

/** Limits that keep a files path lock within the locks' own limits (1024 bytes, 64 segments). */
export const MAX_PATH_BYTES = 1000
export const MAX_SEGMENT_BYTES = 255
export const MAX_SEGMENTS = 60

/**
 * Normalises `input` into segments; `''`, `'.'` and `'./'` are the root (no segments). Refuses
 * with `CHORUS_ERR_FILES_PATH_INVALID` whatever could name something outside the root.
 */
export function parsePath(input: unknown): string[] {
  if (typeof input !== 'string') throw invalidPath(input, 'must be a string')
  if (/[\u0000-\u001f\u007f]/.test(input)) throw invalidPath(input, input.includes('\u0000') ? 'contains NUL' : 'contains a control character')
  if (input.includes('\\')) throw invalidPath(input, 'contains a backslash')
  if (input.startsWith('/')) throw invalidPath(input, 'is absolute (starts with /)')
  if (/^[A-Za-z]:/.test(input)) throw invalidPath(input, 'starts with a drive letter')
  const bytes = Buffer.byteLength(input)
  if (bytes > MAX_PATH_BYTES) throw invalidPath(input, `is ${bytes} bytes long; at most ${MAX_PATH_BYTES} are allowed`)
  const segments: string[] = []
  for (const s of input.split('/')) {
    if (s === '' || s === '.') continue
    if (s === '..') throw invalidPath(input, 'has a ".." segment')
    if (s.startsWith(RESERVED_PREFIX)) throw invalidPath(input, `has a segment starting with the reserved "${RESERVED_PREFIX}"`)
    if (Buffer.byteLength(s) > MAX_SEGMENT_BYTES) throw invalidPath(input, `has a segment longer than ${MAX_SEGMENT_BYTES} bytes`)
    segments.push(s)
  }
  if (segments.length > MAX_SEGMENTS) throw invalidPath(input, `has more than ${MAX_SEGMENTS} segments`)
  return segments
}

/** An area name: one plain segment (`uploads`, `exports`, `repos`), or a path of them. */
export function parseArea(input: unknown): string[] {
  const segments = parsePath(input)
  if (segments.length === 0) throw invalidPath(input, 'must name an area below the root')
  return segments
}

/** The path lock guarding `segments` (the root itself is `files`). */
export function lockName(segments: readonly string[]): string {
  return segments.length === 0 ? LOCK_ROOT : `${LOCK_ROOT}/${segments.join('/')}`
}

/** True when `lock` (a lock name) is `name` or one of its ancestors. */
export function covers(lock: string, name: string): boolean {
  return lock === name || (name.startsWith(lock) && name.charCodeAt(lock.length) === 47 /* / */)
}

/** Compares paths segment by segment, so a directory sorts right before everything below it. */
export function compareSegments(a: readonly string[], b: readonly string[]): number {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) return a[i]! < b[i]! ? -1 : 1
  }
  return a.length - b.length
}

/** True when `a` is `b` or one of its ancestors. */
export function isAncestorOrSelf(a: readonly string[], b: readonly string[]): boolean {
  return a.length <= b.length && a.every((s, i) => s === b[i])
}

/**
 * A temporary name for a file being written (or a directory being removed) by this instance:
 * `.chorus-tmp.<epoch>.<random>.<instanceId>`, so a sweeper can tell whether its writer is alive.
 */
export function tempName(instanceId: string, epoch: number): string {
  return `${TEMP_PREFIX}${epoch}.${randomBytes(6).toString('hex')}.${instanceId}`
}

export interface TempOwner {
  readonly instanceId: string
  readonly epoch: number
}

/** The writer named by a temporary name; `null` for a reserved name of another shape. */
export function parseTempName(name: string): TempOwner | null {
  const m = TEMP_NAME.exec(name)
  return m ? { epoch: Number(m[1]), instanceId: m[3]! } : null
}

/** Shown in messages: a path cut to 200 characters, JSON-quoted so control characters are visible. */
export function show(value: unknown): string {
  if (typeof value !== 'string') return typeof value
  return JSON.stringify(value.length > 200 ? `${value.slice(0, 200)}…` : value)
}

export function invalidPath(input: unknown, why: string): ChorusError {
  return new ChorusError('CHORUS_ERR_FILES_PATH_INVALID', [show(input), why], { details: { reason: why } })
}
