/**
 * The membership events between two views of the table: joins, drains, returns to up, restarts
 * under a new epoch and departures, each reported once, in instance id order.
 */
import type { ClusterEvents, MemberInfo } from '../events.js'

type Emit = <E extends 'member:up' | 'member:draining' | 'member:down'>(event: E, payload: ClusterEvents[E]) => void

/** Emits what changed from `prev` to `next` (both keyed by instance id). */
export function emitTransitions(prev: ReadonlyMap<string, MemberInfo>, next: ReadonlyMap<string, MemberInfo>, emit: Emit): void {
  for (const [id, m] of next) {
    const old = prev.get(id)
    if (old && old.epoch !== m.epoch && old.status !== 'down') {
      emit('member:down', { member: { ...old, status: 'down' }, reason: 'restarted' })
    }
    const oldStatus = old && old.epoch === m.epoch ? old.status : undefined
    if (oldStatus === m.status) continue
    if (m.status === 'up') emit('member:up', { member: m })
    else if (m.status === 'draining') {
      if (oldStatus === undefined) emit('member:up', { member: m })
      emit('member:draining', { member: m })
    } else if (oldStatus !== undefined) {
      emit('member:down', { member: m, reason: m.downReason === 'left' ? 'left' : 'expired' })
    }
  }
  for (const [id, old] of prev) {
    if (!next.has(id) && old.status !== 'down') emit('member:down', { member: { ...old, status: 'down' }, reason: 'expired' })
  }
}
