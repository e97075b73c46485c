// One fuzz run in a worker thread, so that the supervisor (run.mjs) keeps its own event loop to watch
// progress, memory and hangs. Reports progress per batch and, on a failure, the input as generated
// and as shrunk by fast-check.
import { parentPort, workerData } from 'node:worker_threads'
import { fuzz, shrink } from './driver.mjs'
import { makeTarget } from './targets.mjs'

const { name, inputs, seed, batch, concurrency, deadlineMs, shared, shrinkMs } = workerData
// Parse errors are created by the hundred thousand; their stack traces would cost more than the
// parsing. A failing input is run again with stacks on.
Error.stackTraceLimit = 0
const parser = await import('../../dist/realtime/parser.js')
const balancer = await import('../../dist/balancer/balancer.js')
const target = await makeTarget(name, { parser, balancer, deadlineMs })
const t0 = performance.now()
const result = await fuzz({
  target,
  inputs,
  seed,
  batch,
  concurrency,
  deadlineMs,
  shared: new Int32Array(shared),
  onBatch: ({ done, outcomes }) => parentPort.postMessage({ type: 'progress', done, outcomes }),
})
const seconds = (performance.now() - t0) / 1000
let failure = null
if (result.failure) {
  const f = result.failure
  Error.stackTraceLimit = 20
  let stack = null
  try {
    await target.check(f.input)
  } catch (err) {
    stack = err?.stack ?? null
  }
  const shrunk = await shrink(target, f, shrinkMs).catch((err) => ({ input: null, error: `shrinking failed: ${err?.message ?? err}` }))
  failure = {
    batch: f.batch,
    index: f.index,
    batchSeed: f.seed,
    error: f.error,
    stack,
    input: target.describe(f.input),
    shrunk: shrunk?.input ? { input: target.describe(shrunk.input), error: shrunk.error, shrinks: shrunk.shrinks } : null,
  }
}
parentPort.postMessage({ type: 'done', done: result.done, seconds, outcomes: result.outcomes, stats: target.stats(), failure })
target.close()
