/**
 * Destinations: `/topic/**` broadcast to every subscriber on every instance, `/user/queue/**`
 * delivered to every session of one user, `/app/**` routed to handlers. Patterns use `*` for one
 * path segment and `**` for any number of segments.
 */
import { ChorusError } from '../errors.js'

export type DestinationKind = 'topic' | 'user' | 'app'

const VALID = /^\/[\x21-\x7e]{1,255}$/

export function kindOf(destination: string): DestinationKind | null {
  if (!VALID.test(destination) || destination.includes('//') || destination.split('/').includes('..')) return null
  if (destination.startsWith('/topic/') && destination.length > 7) return 'topic'
  if (destination.startsWith('/user/queue/') && destination.length > 12) return 'user'
  if (destination.startsWith('/app/') && destination.length > 5) return 'app'
  return null
}

export function assertDestination(destination: unknown, allowed: readonly DestinationKind[]): DestinationKind {
  const kind = typeof destination === 'string' ? kindOf(destination) : null
  if (!kind || !allowed.includes(kind)) {
    throw new ChorusError('CHORUS_ERR_REALTIME_DESTINATION_INVALID', [JSON.stringify(destination), allowed.map((k) => (k === 'user' ? '/user/queue/…' : `/${k}/…`)).join(', ')])
  }
  return kind
}

/** Compiles `/app/quiz/*\/answer` or `/topic/**` into a matcher. */
export function compilePattern(pattern: string): (destination: string) => boolean {
  if (typeof pattern !== 'string' || !pattern.startsWith('/')) {
    throw new ChorusError('CHORUS_ERR_REALTIME_DESTINATION_INVALID', [JSON.stringify(pattern), 'a pattern starting with /'])
  }
  const source = pattern
    .split('/')
    .map((seg) => (seg === '**' ? '\u0000' : seg === '*' ? '[^/]+' : seg.replace(/[.+?^${}()|[\]\\*]/g, '\\$&')))
    .join('/')
    .replace(/\/\u0000/g, '(?:/.*)?')
    .replace(/\u0000/g, '.*')
  const re = new RegExp(`^${source}$`)
  return (destination) => re.test(destination)
}
