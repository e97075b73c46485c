import { describe, expect, it } from 'vitest'
import { isChorusError } from '../../src/errors.js'
import { enteredFrom, locksMachine } from '../../src/locks/locks.js'

describe('the locks subsystem state machine', () => {
  it('opens once, and closes from new or open', () => {
    const m = locksMachine()
    expect(m.state).toBe('new')
    m.to('open')
    m.to('closed')
    expect(m.state).toBe('closed')
    const early = locksMachine()
    early.to('closed')
    expect(early.state).toBe('closed')
  })

  it('refuses to reopen once closed, or to go back to new, with CHORUS_ERR_INTERNAL_TRANSITION', () => {
    const m = locksMachine()
    m.to('open')
    expect(() => m.to('new')).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_INTERNAL_TRANSITION' }))
    m.to('closed')
    let err: unknown
    try {
      m.to('open')
    } catch (e) {
      err = e
    }
    expect(isChorusError(err, 'CHORUS_ERR_INTERNAL_TRANSITION')).toBe(true)
    expect((err as Error).message).toBe('locks cannot go from "closed" to "open"')
    expect(m.state).toBe('closed')
  })

  it('declares every state with where it may be entered from', () => {
    expect(Object.keys(enteredFrom).sort()).toEqual(['closed', 'new', 'open'])
    expect(enteredFrom.open).toEqual(['new'])
  })
})
