/**
 * A controller that also aborts when any of some other signals does, and lets go of them when
 * disposed. Used instead of `AbortSignal.any`, which keeps every signal it makes alive for as long
 * as its sources live — a leak when one source is the instance's long-lived closing signal.
 */
export class Linked {
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

  abort(reason: unknown): void {
    if (!this.#controller.signal.aborted) this.#controller.abort(reason)
  }

  dispose(): void {
    for (const s of this.#sources) s.removeEventListener('abort', this.#onAbort)
  }
}
