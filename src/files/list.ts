/**
 * Listing a directory: its entries sorted by name, without Chorus's own temporary names, and at
 * most `limit` of them (a larger directory fails instead of filling memory). Takes no lock; an
 * entry removed while the listing runs is left out.
 */
import type { Stats } from 'node:fs'
import { lstat, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { ChorusError } from '../errors.js'
import { parseOptions } from '../util/parse-options.js'
import { listOptions, type FileEntry } from './options.js'
import { RESERVED_PREFIX, show } from './paths.js'
import { describe } from './read.js'
import { code, ioError, notFound, wrongType } from './root.js'
import type { Scope } from './scope.js'

const DEFAULT_LIST_LIMIT = 10_000

export async function listDir(scope: Scope, path: string, opts: unknown): Promise<FileEntry[]> {
  const segments = scope.resolve(path)
  const shown = scope.shown(segments)
  const max = parseOptions(listOptions, opts).limit ?? DEFAULT_LIST_LIMIT
  scope.ctx.assertOpen('listing a directory')
  const real = await scope.ctx.root.real()
  if ((await scope.ctx.root.checkDir(real, segments, shown)) === 'missing') throw notFound(shown)
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
  const prefix = segments.slice(scope.base.length)
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
