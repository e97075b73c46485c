import { describe, expect, it } from 'vitest'
import { connectionMachine, type ConnectionState } from '../../src/realtime/connection.js'

/** A machine moved along `path` from its initial state. */
function after(...path: ConnectionState[]) {
  const m = connectionMachine()
  for (const s of path) m.to(s)
  return m
}

describe('the realtime connection state machine', () => {
  it('goes from awaiting CONNECT to connected to closed, or closes before CONNECT', () => {
    expect(connectionMachine().state).toBe('awaiting-connect')
    expect(after('connected', 'closed').state).toBe('closed')
    expect(after('closed').state).toBe('closed')
  })

  it('refuses to connect a closed session, with a typed error, and stays closed', () => {
    const m = after('closed')
    expect(m.can('connected')).toBe(false)
    expect(() => m.to('connected')).toThrow(
      expect.objectContaining({ code: 'CHORUS_ERR_INTERNAL_TRANSITION', message: 'realtime connection cannot go from "closed" to "connected"' }),
    )
    expect(m.state).toBe('closed')
  })

  it('never goes back to awaiting CONNECT', () => {
    const m = after('connected')
    expect(() => m.to('awaiting-connect')).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_INTERNAL_TRANSITION' }))
    expect(m.state).toBe('connected')
  })
})
