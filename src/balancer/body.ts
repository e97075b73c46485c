/**
 * Request bodies at the balancer. A body is read into memory, up to a limit, before any instance is
 * chosen, so a client that sends slowly holds no upstream connection meanwhile; the rest of a larger
 * body streams on from the client. Every wait for the client's next piece is bounded.
 */
import type { IncomingMessage } from 'node:http'

/** The client let more than the body timeout pass between two pieces of its body. */
export class BodyStalledError extends Error {
  constructor(ms: number) {
    super(`the request body stalled (nothing for ${ms} ms)`)
  }
}

export type BodyStart =
  /** The whole body arrived within the limit. */
  | { readonly whole: true; readonly chunks: Buffer[] }
  /** The body passed the limit: its first chunks; the rest is still to be read from the request. */
  | { readonly whole: false; readonly chunks: Buffer[] }
  | { readonly failed: 'stalled' | 'gone' }

/** Reads `req`'s body until it ends or passes `limit` bytes, waiting at most `idleMs` for each piece. */
export function readBody(req: IncomingMessage, limit: number, idleMs: number): Promise<BodyStart> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    let size = 0
    const finish = (result: BodyStart) => {
      clearTimeout(timer)
      req.off('data', onData).off('end', onEnd).off('error', onGone).off('close', onGone)
      resolve(result)
    }
    const timer = setTimeout(() => finish({ failed: 'stalled' }), idleMs)
    const onData = (chunk: Buffer) => {
      chunks.push(chunk)
      size += chunk.length
      if (size > limit) {
        req.pause()
        finish({ whole: false, chunks })
      } else {
        timer.refresh()
      }
    }
    const onEnd = () => finish({ whole: true, chunks })
    const onGone = () => finish({ failed: 'gone' })
    req.on('data', onData).on('end', onEnd).on('error', onGone).on('close', onGone)
  })
}

/**
 * The body whose start `readBody` returned: those chunks, then the rest as it comes from `req`, each
 * piece within `idleMs` (else the iteration throws BodyStalledError, leaving `req` to the caller).
 * Time spent waiting for the consumer (an instance reading slowly) does not count.
 */
export async function* restOfBody(start: readonly Buffer[], req: IncomingMessage, idleMs: number): AsyncGenerator<Buffer> {
  for (const chunk of start) yield chunk
  const it = req[Symbol.asyncIterator]() as AsyncIterator<Buffer>
  for (;;) {
    let timer: NodeJS.Timeout | undefined
    const stalled = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new BodyStalledError(idleMs)), idleMs)
    })
    let next: IteratorResult<Buffer>
    try {
      next = await Promise.race([it.next(), stalled])
    } finally {
      clearTimeout(timer)
    }
    if (next.done) return
    yield next.value
  }
}
