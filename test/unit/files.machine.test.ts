import { describe, expect, it } from 'vitest'
import { isChorusError } from '../../src/errors.js'
import { enteredFrom, filesMachine } from '../../src/files/files.js'

describe('the files subsystem state machine', () => {
  it('opens once, and closes from new or open', () => {
    const m = filesMachine()
    expect(m.state).toBe('new')
    m.to('open')
    m.to('closed')
    expect(m.state).toBe('closed')
    const early = filesMachine()
    early.to('closed')
    expect(early.state).toBe('closed')
  })

  it('refuses to reopen once closed with CHORUS_ERR_INTERNAL_TRANSITION, and stays closed', () => {
    const m = filesMachine()
    m.to('open')
    m.to('closed')
    let err: unknown
    try {
      m.to('open')
    } catch (e) {
      err = e
    }
    expect(isChorusError(err, 'CHORUS_ERR_INTERNAL_TRANSITION')).toBe(true)
    expect((err as Error).message).toBe('files cannot go from "closed" to "open"')
    expect(m.state).toBe('closed')
    expect(() => m.to('new')).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_INTERNAL_TRANSITION' }))
  })

  it('declares every state with where it may be entered from', () => {
    expect(Object.keys(enteredFrom).sort()).toEqual(['closed', 'new', 'open'])
    expect(enteredFrom.new).toEqual([])
  })
})
