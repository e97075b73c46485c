import { describe, expect, it } from 'vitest'
import { isChorusError } from '../../src/errors.js'
import { membershipMachine } from '../../src/membership/membership.js'

function refusal(fn: () => void): unknown {
  try {
    fn()
  } catch (err) {
    return err
  }
  return null
}

describe('the membership state machine', () => {
  it('joins, drains, isolates, rejoins draining and leaves along its declared edges', () => {
    const seen: string[] = []
    const m = membershipMachine((from, to) => void seen.push(`${from}->${to}`))
    expect(m.state).toBe('joining')
    m.to('up')
    m.to('draining')
    m.to('isolated')
    m.to('draining')
    m.to('left')
    expect(seen).toEqual(['joining->up', 'up->draining', 'draining->isolated', 'isolated->draining', 'draining->left'])
  })

  it('refuses to isolate an instance that never joined, with a typed error, and stays where it was', () => {
    const m = membershipMachine()
    const err = refusal(() => m.to('isolated'))
    expect(isChorusError(err, 'CHORUS_ERR_INTERNAL_TRANSITION')).toBe(true)
    expect((err as Error).message).toBe('membership cannot go from "joining" to "isolated"')
    expect(m.state).toBe('joining')
  })

  it('refuses to come back from left, and a draining instance cannot return to up without rejoining', () => {
    const left = membershipMachine()
    left.to('up')
    left.to('left')
    for (const next of ['joining', 'up', 'draining', 'isolated'] as const) {
      expect(left.can(next)).toBe(false)
      expect(isChorusError(refusal(() => left.to(next)), 'CHORUS_ERR_INTERNAL_TRANSITION')).toBe(true)
    }
    expect(left.state).toBe('left')
    const draining = membershipMachine()
    draining.to('draining')
    expect(isChorusError(refusal(() => draining.to('up')), 'CHORUS_ERR_INTERNAL_TRANSITION')).toBe(true)
    expect(draining.state).toBe('draining')
  })
})
