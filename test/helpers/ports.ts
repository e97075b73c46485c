// Free TCP ports on 127.0.0.1 for tests that start servers on fixed ports (`chorus up` uses P…P+N).
import { createServer } from 'node:net'

/** A base port P such that P, P+1 … P+count are all free right now. */
export async function freeBase(count = 3): Promise<number> {
  for (;;) {
    const base = 20000 + Math.floor(Math.random() * 20000)
    const ok = await Promise.all(Array.from({ length: count + 1 }, (_, i) => new Promise<boolean>((resolve) => {
      const s = createServer().once('error', () => resolve(false)).listen(base + i, '127.0.0.1', () => s.close(() => resolve(true)))
    })))
    if (ok.every(Boolean)) return base
  }
}
