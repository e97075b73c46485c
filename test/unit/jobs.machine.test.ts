import { describe, expect, it } from 'vitest'
import { isChorusError } from '../../src/errors.js'
import { cronEnteredFrom, cronMachine } from '../../src/jobs/cron.js'
import { leaseEnteredFrom, leaseMachine } from '../../src/jobs/singleton.js'
import { workerEnteredFrom, workerMachine } from '../../src/jobs/worker.js'

/** The error `fn` throws (it must throw). */
function thrown(fn: () => void): unknown {
  try {
    fn()
  } catch (err) {
    return err
  }
  return expect.unreachable('no error was thrown')
}

describe('the jobs worker state machine', () => {
  it('drains from running, then closes', () => {
    const m = workerMachine()
    expect(m.state).toBe('running')
    m.to('draining')
    m.to('closed')
    expect(m.state).toBe('closed')
  })

  it('refuses to close without draining, or to run again once draining, with CHORUS_ERR_INTERNAL_TRANSITION', () => {
    const m = workerMachine()
    const err = thrown(() => m.to('closed'))
    expect(isChorusError(err, 'CHORUS_ERR_INTERNAL_TRANSITION')).toBe(true)
    expect((err as Error).message).toBe('jobs worker cannot go from "running" to "closed"')
    expect(m.state).toBe('running')
    m.to('draining')
    expect(isChorusError(thrown(() => m.to('running')), 'CHORUS_ERR_INTERNAL_TRANSITION')).toBe(true)
    expect(m.state).toBe('draining')
  })

  it('declares every state with where it may be entered from', () => {
    expect(Object.keys(workerEnteredFrom).sort()).toEqual(['closed', 'draining', 'running'])
    expect(workerEnteredFrom.running).toEqual([])
  })
})

describe('a singleton lease state machine', () => {
  it('acquires, holds, stops and becomes idle again, and closes from idle', () => {
    const m = leaseMachine('report')
    expect(m.state).toBe('idle')
    for (const next of ['acquiring', 'held', 'stopping', 'idle', 'acquiring', 'idle', 'closed'] as const) m.to(next)
    expect(m.state).toBe('closed')
  })

  it('refuses to hold without acquiring, and to leave closed, with CHORUS_ERR_INTERNAL_TRANSITION', () => {
    const m = leaseMachine('report')
    const err = thrown(() => m.to('held'))
    expect(isChorusError(err, 'CHORUS_ERR_INTERNAL_TRANSITION')).toBe(true)
    expect((err as Error).message).toBe('singleton report cannot go from "idle" to "held"')
    m.to('closed')
    expect(isChorusError(thrown(() => m.to('idle')), 'CHORUS_ERR_INTERNAL_TRANSITION')).toBe(true)
    expect(isChorusError(thrown(() => m.to('acquiring')), 'CHORUS_ERR_INTERNAL_TRANSITION')).toBe(true)
    expect(m.state).toBe('closed')
  })

  it('declares every state with where it may be entered from', () => {
    expect(Object.keys(leaseEnteredFrom).sort()).toEqual(['acquiring', 'closed', 'held', 'idle', 'stopping'])
    expect(leaseEnteredFrom.held).toEqual(['acquiring'])
  })
})

describe('the cron scheduler state machine', () => {
  it('stops once, and never becomes active again', () => {
    const m = cronMachine()
    expect(m.state).toBe('active')
    m.to('stopped')
    m.to('stopped')
    const err = thrown(() => m.to('active'))
    expect(isChorusError(err, 'CHORUS_ERR_INTERNAL_TRANSITION')).toBe(true)
    expect((err as Error).message).toBe('cron scheduler cannot go from "stopped" to "active"')
    expect(m.state).toBe('stopped')
    expect(Object.keys(cronEnteredFrom).sort()).toEqual(['active', 'stopped'])
  })
})
