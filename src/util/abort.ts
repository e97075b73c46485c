/**
 * Abort signals: "this promise, or the signal, whichever first", and one signal that aborts when
 * any of several does. Both remove their listeners once settled, so a long-lived signal (a
 * subsystem's closing signal) does not collect one listener per call.
 */

/** Settles as `promise` does, or rejects with the signal's reason as soon as it aborts. A late rejection of `promise` is swallowed. */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise
  if (signal.aborted) {
    promise.catch(() => undefined)
    return Promise.reject(signal.reason)
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      promise.catch(() => undefined)
      reject(signal.reason)
    }
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort)
        resolve(value)
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort)
        reject(err)
      },
    )
  })
}

/**
 * A signal that aborts with the reason of the first of `sources` to abort, or when `abort(reason)`
 * is called. `dispose()` detaches it from its sources (call it when the work is done).
 */
export class LinkedSignal {
  readonly #controller = new AbortController()
  readonly #sources: AbortSignal[]
  readonly #onAbort = (e: Event) => this.abort((e.target as AbortSignal).reason)

  constructor(sources: readonly (AbortSignal | undefined)[]) {
    this.#sources = sources.filter((s): s is AbortSignal => s !== undefined)
    for (const s of this.#sources) {
      if (s.aborted) {
        this.#controller.abort(s.reason)
        break
      }
      s.addEventListener('abort', this.#onAbort, { once: true })
    }
  }

  get signal(): AbortSignal {
    return this.#controller.signal
  }

  get aborted(): boolean {
    return this.#controller.signal.aborted
  }

  abort(reason: unknown): void {
    if (!this.#controller.signal.aborted) this.#controller.abort(reason)
    this.dispose()
  }

  dispose(): void {
    for (const s of this.#sources) s.removeEventListener('abort', this.#onAbort)
    this.#sources.length = 0
  }
}
