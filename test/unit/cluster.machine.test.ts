import { describe, expect, it } from 'vitest'
import { clusterEnteredFrom, type ClusterState } from '../../src/cluster.js'
import { isChorusError } from '../../src/errors.js'
import { Machine } from '../../src/util/machine.js'

describe('the cluster state machine', () => {
  it('goes starting → up ⇄ isolated → draining → stopped', () => {
    const m = new Machine<ClusterState>('cluster', clusterEnteredFrom, 'starting')
    for (const s of ['up', 'isolated', 'up', 'draining', 'stopped'] as const) m.to(s)
    expect(m.state).toBe('stopped')
  })

  it('refuses to come back from stopped, or to drain before it is up', () => {
    const stopped = new Machine<ClusterState>('cluster', clusterEnteredFrom, 'stopped')
    expect(() => stopped.to('up')).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_INTERNAL_TRANSITION' }))
    const starting = new Machine<ClusterState>('cluster', clusterEnteredFrom, 'starting')
    try {
      starting.to('draining')
      expect.unreachable()
    } catch (err) {
      expect(isChorusError(err, 'CHORUS_ERR_INTERNAL_TRANSITION')).toBe(true)
    }
    expect(starting.state).toBe('starting')
  })
})
