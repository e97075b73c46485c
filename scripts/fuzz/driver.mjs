// The fuzz loop shared by `npm run fuzz` and the short fuzz in the test suite. fast-check generates
// the inputs (in batches of one seed each, so any input is regenerated from seed, batch and index)
// and, on a failure, shrinks it by replaying that run (`seed` + `path`). Inputs run one at a time
// (a synchronous target) or `concurrency` at a time (an asynchronous one); each must settle within
// `deadlineMs`. Progress goes to `shared` (an Int32Array on a SharedArrayBuffer) so a supervisor in
// another thread can see a hang even when this thread is stuck in a loop.
import fc from 'fast-check'

/** Slots of the shared progress array. */
export const SLOT = { done: 0, batch: 1, running: 2 }
export const SHARED_INTS = 3

export const targetNames = ['stomp', 'http', 'http-socket', 'balancer']

/** Seed of batch `b` of a run seeded `seed` (a 32-bit mix, so neighbouring batches differ). */
export function batchSeed(seed, b) {
  let h = (seed ^ Math.imul(b + 1, 0x9e3779b1)) >>> 0
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0
  return (h ^ (h >>> 16)) | 0
}

/** The inputs of batch `b`, exactly as the run generated them. */
export function batchInputs(arb, seed, b, size) {
  return fc.sample(arb, { seed: batchSeed(seed, b), numRuns: size })
}

/**
 * Runs `inputs` inputs of `target` ({ arb, check(input) → outcome | Promise<outcome>, async }).
 * Resolves with { done, outcomes, failure } — failure: { batch, index, seed, error, input } of the
 * first input that threw, broke its deadline or was slow; the run stops there.
 */
export async function fuzz({ target, inputs, seed, batch = 1000, concurrency = 16, deadlineMs = 2000, shared = null, onBatch = () => undefined }) {
  const outcomes = Object.create(null)
  let done = 0
  const tally = (o) => (outcomes[o] = (outcomes[o] ?? 0) + 1)
  for (let b = 0; done < inputs; b++) {
    const size = Math.min(batch, inputs - done)
    const xs = batchInputs(target.arb, seed, b, size)
    if (shared) Atomics.store(shared, SLOT.batch, b)
    let failure = null
    const fail = (index, error) => {
      if (!failure || index < failure.index) failure = { batch: b, index, seed: batchSeed(seed, b), error: String(error?.message ?? error), input: xs[index] }
    }
    if (!target.async) {
      for (let i = 0; i < xs.length; i++) {
        const t0 = performance.now()
        try {
          tally(target.check(xs[i]))
        } catch (err) {
          fail(i, err)
          break
        }
        const ms = performance.now() - t0
        if (ms > deadlineMs) {
          fail(i, new Error(`one input took ${Math.round(ms)} ms (deadline ${deadlineMs} ms)`))
          break
        }
        if (shared) Atomics.add(shared, SLOT.done, 1)
      }
    } else {
      let next = 0
      const lane = async () => {
        while (next < xs.length && !failure) {
          const i = next++
          let timer
          try {
            // A backstop: the target enforces `deadlineMs` itself and cleans up after a breach.
            const deadline = new Promise((_, reject) => {
              timer = setTimeout(() => reject(new Error(`no outcome within ${2 * deadlineMs} ms`)), 2 * deadlineMs)
            })
            tally(await Promise.race([target.check(xs[i]), deadline]))
          } catch (err) {
            fail(i, err)
          } finally {
            clearTimeout(timer)
          }
          if (shared) Atomics.add(shared, SLOT.done, 1)
        }
      }
      await Promise.all(Array.from({ length: Math.min(concurrency, xs.length) }, lane))
    }
    if (failure) return { done: done + failure.index, outcomes, failure }
    done += size
    await onBatch({ done, outcomes })
  }
  return { done, outcomes, failure: null }
}

/**
 * Replays the failing run with fast-check (its seed and index as `path`) so that fast-check shrinks
 * it; resolves with the smallest input that still fails, or null if the replay passed. Bounded by
 * `timeLimitMs`.
 */
export async function shrink(target, failure, timeLimitMs = 60_000) {
  const predicate = async (x) => {
    await target.check(x)
  }
  const property = target.async ? fc.asyncProperty(target.arb, predicate) : fc.property(target.arb, (x) => void target.check(x))
  const details = await fc.check(property, { seed: failure.seed, path: String(failure.index), numRuns: 1, interruptAfterTimeLimit: timeLimitMs })
  return details.failed ? { input: details.counterexample[0], error: String(details.errorInstance?.message ?? details.error ?? ''), shrinks: details.numShrinks } : null
}
