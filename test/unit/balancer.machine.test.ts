import { describe, expect, it } from 'vitest'
import { connMachine } from '../../src/balancer/upstream-conn.js'

describe('the state machine of a balancer connection to an upstream', () => {
  it('connects, serves, idles, serves again and closes', () => {
    const m = connMachine('connection to 127.0.0.1:1')
    for (const next of ['busy', 'idle', 'busy', 'idle', 'closed'] as const) m.to(next)
    expect(m.state).toBe('closed')
  })

  it('refuses to pool a connection that is still connecting, with a typed error, and stays where it was', () => {
    const m = connMachine('connection to 127.0.0.1:1')
    expect(() => m.to('idle')).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_INTERNAL_TRANSITION' }))
    expect(m.state).toBe('connecting')
    m.to('closed')
    expect(() => m.to('busy')).toThrow(/cannot go from "closed" to "busy"/)
  })
})
