/**
 * The shapes the dashboard serves (the JSON API, the live stream, the page): a snapshot of the
 * cluster — instances with their last reported figures, locks, jobs, bus, caches, realtime, and a
 * short history — and the membership transitions. Also the readers of stored rows into them.
 */
import type { JobStatus } from '../jobs/status.js'
import type { LockStatus } from '../locks/status.js'
import type { InstanceReport } from './report.js'

/** `isolated`: alive in the table but not renewing (its lease ran out, or it said so itself). */
export type DisplayStatus = 'up' | 'draining' | 'isolated' | 'down'

export interface InstanceFigures {
  /** How long ago the instance last reported, on database time. */
  readonly reportedAgoMs: number
  readonly uptimeSec: number
  readonly sessions: number
  readonly eventLoopMeanMs: number
  readonly eventLoopP99Ms: number
  readonly rssBytes: number
  readonly heapUsedBytes: number
  readonly cpuPercent: number
  readonly busPublishedPerSec: number
  readonly busDeliveredPerSec: number
  readonly busGaps: number
  readonly realtimePublishedPerSec: number
  readonly realtimeDeliveredPerSec: number
  readonly jobsPerSec: number
  readonly jobsCompleted: number
  readonly jobsFailed: number
  readonly locksHeld: number
  readonly locksWaiting: number
  readonly caches: InstanceReport['caches']
}

export interface InstanceView {
  readonly id: string
  readonly epoch: number
  readonly status: DisplayStatus
  /** `chorus`: a Chorus instance; `eureka`: a service registered through the Eureka API. */
  readonly kind: 'chorus' | 'eureka'
  readonly url: string | null
  readonly roles: readonly string[]
  readonly host: string | null
  readonly pid: number | null
  readonly startedAt: string
  readonly uptimeSec: number
  readonly heartbeatAgeMs: number
  readonly downReason: string | null
  readonly downAt: string | null
  /** The balancer sends requests to it now. */
  readonly inRotation: boolean
  /** Eureka: the application name and the status the service reported (UP, OUT_OF_SERVICE, …). */
  readonly eureka: { readonly app: string; readonly instanceId: string; readonly status: string; readonly leaseSec: number } | null
  readonly figures: InstanceFigures | null
}

export interface MemberEvent {
  readonly id: number
  readonly at: string
  readonly instanceId: string
  readonly epoch: number
  readonly kind: 'joined' | 'rejoined' | 'draining' | 'up' | 'down'
  readonly status: string
  readonly reason: string | null
  readonly eureka: boolean
}

export interface JobFailure {
  readonly id: string
  readonly name: string
  readonly state: string
  readonly attempts: number
  readonly error: string | null
  readonly at: string
}

export interface Series {
  /** Milliseconds since the epoch of each point. */
  readonly t: number[]
  readonly busPublished: number[]
  readonly busDelivered: number[]
  readonly realtimeDelivered: number[]
  readonly jobs: number[]
}

export interface Snapshot {
  readonly at: string
  readonly counts: Readonly<Record<DisplayStatus, number>> & { readonly eureka: number }
  readonly instances: readonly InstanceView[]
  readonly locks: LockStatus | null
  readonly jobs: (JobStatus & { readonly failures: readonly JobFailure[] }) | null
  readonly bus: { readonly publishedPerSec: number; readonly deliveredPerSec: number; readonly gaps: number }
  readonly caches: readonly { readonly instanceId: string; readonly name: string; readonly hits: number; readonly misses: number; readonly size: number; readonly hitRatio: number | null }[]
  readonly realtime: { readonly sessions: number; readonly deliveredPerSec: number; readonly publishedPerSec: number }
  readonly series: Series
}

export interface EventRow {
  id: string
  at: Date
  instance_id: string
  epoch: string
  kind: MemberEvent['kind']
  status: string
  reason: string | null
  eureka: boolean
}

export function toEvent(r: EventRow): MemberEvent {
  return { id: Number(r.id), at: r.at.toISOString(), instanceId: r.instance_id, epoch: Number(r.epoch), kind: r.kind, status: r.status, reason: r.reason, eureka: r.eureka }
}

/** The Eureka part of a member's metadata, when the member was registered through the Eureka API. */
export function eurekaOf(metadata: Record<string, unknown>): { app: string; instanceId: string; status: string; url: string | null } | null {
  const e = metadata?.eureka
  if (typeof e !== 'object' || e === null) return null
  const o = e as Record<string, unknown>
  const str = (v: unknown) => (typeof v === 'string' ? v : null)
  const status = str(o.overriddenStatus) && o.overriddenStatus !== 'UNKNOWN' ? str(o.overriddenStatus)! : (str(o.status) ?? 'UNKNOWN')
  return { app: str(o.app) ?? '?', instanceId: str(o.instanceId) ?? '?', status, url: str(o.homePageUrl) }
}
