import { describe, expect, it } from 'vitest'
import { isChorusError } from '../../src/errors.js'
import { enteredFrom, subscriptionMachine } from '../../src/state/reliable-subscription.js'

describe('the reliable subscription state machine', () => {
  it('starts, stands by and takes over, and closes from any state', () => {
    const m = subscriptionMachine()
    expect(m.state).toBe('starting')
    m.to('standby')
    m.to('active')
    m.to('standby')
    m.to('closed')
    expect(m.state).toBe('closed')
    for (const from of ['starting', 'standby', 'active'] as const) expect(enteredFrom.closed).toContain(from)
  })

  it('refuses to deliver again once closed, or to go back to starting, with CHORUS_ERR_INTERNAL_TRANSITION', () => {
    const m = subscriptionMachine()
    m.to('active')
    expect(() => m.to('starting')).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_INTERNAL_TRANSITION' }))
    m.to('closed')
    let err: unknown
    try {
      m.to('active')
    } catch (e) {
      err = e
    }
    expect(isChorusError(err, 'CHORUS_ERR_INTERNAL_TRANSITION')).toBe(true)
    expect((err as Error).message).toBe('reliable subscription cannot go from "closed" to "active"')
    expect(m.state).toBe('closed')
    expect(m.can('standby')).toBe(false)
  })
})
