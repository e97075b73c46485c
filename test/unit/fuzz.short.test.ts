// The fuzzers of `npm run fuzz` (scripts/fuzz), briefly: a few thousand seeded inputs each, against
// the sources, so that a change that makes the STOMP parser throw something else than its parse
// error, or the balancer's server hang on some bytes, fails here before a long run finds it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import * as parser from '../../src/realtime/parser.js'
import { fuzz } from '../../scripts/fuzz/driver.mjs'
import { makeTarget } from '../../scripts/fuzz/targets.mjs'

const SEED = 20_260_613

describe('the fuzzers, briefly', () => {
  // Parse errors are created by the thousand; their stacks are not needed.
  const stackTraceLimit = Error.stackTraceLimit
  beforeAll(() => void (Error.stackTraceLimit = 0))
  afterAll(() => void (Error.stackTraceLimit = stackTraceLimit))

  it('the STOMP parser ends 3,000 generated inputs in frames or its own errors, the same whatever the chunk boundaries', async () => {
    const target = await makeTarget('stomp', { parser })
    const run = await fuzz({ target, inputs: 3000, seed: SEED })
    expect(run.failure).toBeNull()
    expect(run.done).toBe(3000)
    // The inputs reach every part of the parser, not only its first refusal.
    expect(Object.keys(run.outcomes)).toEqual(
      expect.arrayContaining(['frames', 'unknown-command', 'bad-escape', 'bad-header', 'bad-content-length', 'header-line-too-long', 'too-many-headers', 'frame-too-large', 'body-too-large', 'missing-nul']),
    )
  })

  it("the balancer's server answers or closes each of 2,000 generated connections within 2 s", async () => {
    const target = await makeTarget('http', { deadlineMs: 2000 })
    try {
      const run = await fuzz({ target, inputs: 2000, seed: SEED, concurrency: 16, deadlineMs: 2000 })
      expect(run.failure).toBeNull()
      expect(Object.keys(run.outcomes)).toEqual(expect.arrayContaining(['200', '400', '431', '503', 'closed']))
    } finally {
      target.close()
    }
  })
})
