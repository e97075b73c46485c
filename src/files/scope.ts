/**
 * What one files store works in: the context every store of a cluster shares (root, locks,
 * membership, limits, the open/closed gate), and the store's own base below the root. Users'
 * paths become segments here — checked against the limits including the base — and segments
 * become the paths users know again, so no operation builds either by hand.
 */
import type { Logger } from 'pino'
import type { Locks } from '../locks/locks.js'
import type { Membership } from '../membership/membership.js'
import { invalidPath, MAX_PATH_BYTES, MAX_SEGMENTS, parseArea, parsePath } from './paths.js'
import type { Root } from './root.js'

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

export class Scope {
  readonly ctx: FilesContext
  /** Segments of the store's directory below the root (empty for the root itself). */
  readonly base: readonly string[]

  constructor(ctx: FilesContext, base: readonly string[]) {
    this.ctx = ctx
    this.base = base
  }

  /** The scope of the area `name` below this one. */
  area(name: string): Scope {
    const segments = this.base.concat(parseArea(name))
    checkTotal(name, segments)
    return new Scope(this.ctx, segments)
  }

  /** `path` as segments below the root (this scope's base first). */
  resolve(path: string): string[] {
    const segments = this.base.concat(parsePath(path))
    checkTotal(path, segments)
    return segments
  }

  /** True when `segments` are this scope's own directory. */
  isBase(segments: readonly string[]): boolean {
    return segments.length === this.base.length
  }

  /** A path as users of this store know it (relative to it). */
  shown(segments: readonly string[]): string {
    return segments.slice(this.base.length).join('/') || '.'
  }
}

function checkTotal(input: string, segments: readonly string[]): void {
  if (segments.length > MAX_SEGMENTS) throw invalidPath(input, `has more than ${MAX_SEGMENTS} segments with its area`)
  if (Buffer.byteLength(segments.join('/')) > MAX_PATH_BYTES) throw invalidPath(input, `is longer than ${MAX_PATH_BYTES} bytes with its area`)
}
