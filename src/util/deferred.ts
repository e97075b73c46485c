/**
 * A promise with its resolve and reject in hand (graphile-worker's `deferred`, in our words): for
 * "wait until someone else says so" without a hand-written `new Promise` each time.
 */
export interface Deferred<T> {
  readonly promise: Promise<T>
  readonly settled: boolean
  resolve(value: T): void
  reject(reason: unknown): void
}

export function defer<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void
  let reject!: (reason: unknown) => void
  let settled = false
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  return {
    promise,
    get settled() {
      return settled
    },
    resolve(value) {
      settled = true
      resolve(value)
    },
    reject(reason) {
      settled = true
      reject(reason)
    },
  }
}
