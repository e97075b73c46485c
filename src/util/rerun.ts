/**
 * A coalesced rerun: `run()` starts the task, or — when it is already running — asks for one more
 * run after the current one, however many times it is asked meanwhile. Every caller's promise
 * settles when a run that started after its call has finished, so "refresh, then read" is safe.
 * Errors of the task go to `onError` (the task is a background refresh; nobody else would see them).
 */
export class Rerun {
  readonly #task: () => Promise<void>
  readonly #onError: (err: unknown) => void
  #running: Promise<void> | null = null
  #next: Promise<void> | null = null

  constructor(task: () => Promise<void>, onError: (err: unknown) => void) {
    this.#task = task
    this.#onError = onError
  }

  get running(): boolean {
    return this.#running !== null
  }

  run(): Promise<void> {
    if (this.#running === null) {
      this.#running = this.#once().finally(() => {
        this.#running = null
      })
      return this.#running
    }
    this.#next ??= this.#running.then(() => {
      this.#next = null
      return this.run()
    })
    return this.#next
  }

  async #once(): Promise<void> {
    try {
      await this.#task()
    } catch (err) {
      this.#onError(err)
    }
  }
}
