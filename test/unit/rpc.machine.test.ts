import { describe, expect, it } from 'vitest'
import { rpcMachine } from '../../src/rpc/rpc.js'

describe('the RPC state machine', () => {
  it('starts open and closes once', () => {
    const m = rpcMachine()
    expect(m.state).toBe('open')
    m.to('closed')
    m.to('closed')
    expect(m.state).toBe('closed')
  })

  it('refuses to reopen once closed, with a typed error, and stays closed', () => {
    const m = rpcMachine()
    m.to('closed')
    expect(m.can('open')).toBe(false)
    expect(() => m.to('open')).toThrow(
      expect.objectContaining({ code: 'CHORUS_ERR_INTERNAL_TRANSITION', message: 'rpc cannot go from "closed" to "open"' }),
    )
    expect(m.state).toBe('closed')
  })
})
