/**
 * Random bytes drawn from the kernel in 4 KiB blocks: one system call per block instead of one per
 * id, for ids made on hot paths (lease ids, RPC nonces).
 */
import { randomFillSync } from 'node:crypto'

const pool = Buffer.alloc(4096)
let offset = pool.length

/** The next `size` random bytes (a view into the pool: read it before the next call). */
export function randomChunk(size: number): Buffer {
  if (size > pool.length) throw new RangeError(`at most ${pool.length} random bytes at a time`)
  if (offset + size > pool.length) {
    randomFillSync(pool)
    offset = 0
  }
  offset += size
  return pool.subarray(offset - size, offset)
}
