/**
 * Lock names and paths: what is accepted, and the resource keys a lock covers. A plain name is one
 * key; a path `a/b/c` covers its ancestors `a`, `a/b` (intention entries) and itself. Plain names
 * and paths live in separate key spaces, so `acquire('a/b')` and `path('a/b')` never meet.
 */
import { ChorusError } from '../errors.js'

/** Key spaces, stored in the `space` column. */
export const NAME_SPACE = 0
export const PATH_SPACE = 1
export type Space = typeof NAME_SPACE | typeof PATH_SPACE

/** Longest plain name, in UTF-8 bytes. */
export const MAX_NAME_BYTES = 512
/** Longest path, in UTF-8 bytes, and most segments. */
export const MAX_PATH_BYTES = 1024
export const MAX_PATH_SEGMENTS = 64

/** What a lock request covers: its key space and its keys, ancestors first, the target last. */
export interface Resource {
  readonly space: Space
  readonly keys: readonly string[]
  readonly target: string
}

export function nameResource(name: unknown): Resource {
  if (typeof name !== 'string') throw invalidName(name, 'must be a string')
  if (name.length === 0) throw invalidName(name, 'must not be empty')
  if (name.includes('\u0000')) throw invalidName(name, 'must not contain NUL')
  const bytes = Buffer.byteLength(name)
  if (bytes > MAX_NAME_BYTES) throw invalidName(name, `is ${bytes} bytes; at most ${MAX_NAME_BYTES} are allowed`)
  return { space: NAME_SPACE, keys: [name], target: name }
}

export function pathResource(path: unknown): Resource {
  if (typeof path !== 'string') throw invalidPath(path, 'must be a string')
  if (path.length === 0) throw invalidPath(path, 'must not be empty')
  if (path.includes('\u0000')) throw invalidPath(path, 'must not contain NUL')
  const bytes = Buffer.byteLength(path)
  if (bytes > MAX_PATH_BYTES) throw invalidPath(path, `is ${bytes} bytes; at most ${MAX_PATH_BYTES} are allowed`)
  if (path.startsWith('/')) throw invalidPath(path, 'must be relative (no leading /)')
  if (path.endsWith('/')) throw invalidPath(path, 'must not end with /')
  const segments = path.split('/')
  if (segments.length > MAX_PATH_SEGMENTS) throw invalidPath(path, `has ${segments.length} segments; at most ${MAX_PATH_SEGMENTS} are allowed`)
  const keys: string[] = []
  let prefix = ''
  for (const s of segments) {
    if (s === '') throw invalidPath(path, 'must not contain an empty segment (//)')
    if (s === '.' || s === '..') throw invalidPath(path, `must not contain a "${s}" segment`)
    prefix = prefix ? `${prefix}/${s}` : s
    keys.push(prefix)
  }
  return { space: PATH_SPACE, keys, target: path }
}

/**
 * True when a change on `released` may unblock a request on `waiting` in the same space: for
 * names, equality; for paths, when one is the other or an ancestor of it (only then do their
 * entries meet with a real mode on one side).
 */
export function related(space: Space, released: string, waiting: string): boolean {
  if (released === waiting) return true
  if (space === NAME_SPACE) return false
  return isAncestor(released, waiting) || isAncestor(waiting, released)
}

function isAncestor(a: string, b: string): boolean {
  return b.length > a.length && b.startsWith(a) && b.charCodeAt(a.length) === 47 /* / */
}

function show(value: unknown): string {
  if (typeof value !== 'string') return typeof value
  const shown = JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value)
  return shown
}

function invalidName(name: unknown, why: string): ChorusError {
  return new ChorusError('CHORUS_ERR_LOCK_NAME_INVALID', [show(name), why], { details: { reason: why } })
}

function invalidPath(path: unknown, why: string): ChorusError {
  return new ChorusError('CHORUS_ERR_LOCK_PATH_INVALID', [show(path), why], { details: { reason: why } })
}
