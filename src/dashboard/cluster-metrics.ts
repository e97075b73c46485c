/**
 * Cluster-level Prometheus gauges served by the dashboard at /metrics: what no single instance can
 * say about the whole — members by status, each instance's last reported health, jobs by state,
 * locks, singletons — read from the dashboard's latest view when scraped.
 */
import { Gauge, Registry } from 'prom-client'
import type { ClusterView } from './view.js'

export class ClusterMetrics {
  readonly registry = new Registry()

  constructor(view: ClusterView) {
    const registers = [this.registry]
    const snap = () => view.snapshot
    const perInstance = (name: string, help: string, pick: (f: NonNullable<ReturnType<typeof snap>['instances'][number]['figures']>) => number) =>
      new Gauge({
        name, help, labelNames: ['instance_id'] as const, registers,
        collect() {
          this.reset()
          for (const i of snap().instances) if (i.figures && i.status !== 'down') this.set({ instance_id: i.id }, pick(i.figures))
        },
      })

    new Gauge({
      name: 'chorus_cluster_members', help: 'Members by status (isolated: not renewing yet not declared down; down: the last ten minutes)', labelNames: ['status', 'kind'] as const, registers,
      collect() {
        this.reset()
        for (const status of ['up', 'draining', 'isolated', 'down'] as const) for (const kind of ['chorus', 'eureka'] as const) this.set({ status, kind }, 0)
        for (const i of snap().instances) this.inc({ status: i.status, kind: i.kind })
      },
    })
    new Gauge({
      name: 'chorus_cluster_member_heartbeat_age_seconds', help: 'Age of each live member\'s last heartbeat, on database time', labelNames: ['instance_id'] as const, registers,
      collect() {
        this.reset()
        for (const i of snap().instances) if (i.status !== 'down') this.set({ instance_id: i.id }, i.heartbeatAgeMs / 1000)
      },
    })
    perInstance('chorus_cluster_instance_event_loop_lag_p99_seconds', 'Event-loop delay (p99) each instance last reported', (f) => f.eventLoopP99Ms / 1000)
    perInstance('chorus_cluster_instance_resident_memory_bytes', 'Resident memory each instance last reported', (f) => f.rssBytes)
    perInstance('chorus_cluster_instance_cpu_ratio', 'CPU time over wall time each instance last reported (1 = one core)', (f) => f.cpuPercent / 100)
    perInstance('chorus_cluster_instance_sessions', 'WebSocket sessions on each instance', (f) => f.sessions)
    perInstance('chorus_cluster_instance_bus_published_per_second', 'Bus messages each instance publishes per second', (f) => f.busPublishedPerSec)
    perInstance('chorus_cluster_instance_realtime_delivered_per_second', 'Realtime messages each instance delivers per second', (f) => f.realtimeDeliveredPerSec)
    perInstance('chorus_cluster_instance_jobs_per_second', 'Jobs each instance finishes per second', (f) => f.jobsPerSec)
    new Gauge({
      name: 'chorus_cluster_jobs', help: 'Jobs in the queue by name and state', labelNames: ['name', 'state'] as const, registers,
      collect() {
        this.reset()
        for (const j of snap().jobs?.jobs ?? []) {
          for (const state of ['queued', 'running', 'completed', 'failed', 'cancelled'] as const) this.set({ name: j.name, state }, j[state])
        }
      },
    })
    new Gauge({
      name: 'chorus_cluster_locks_held', help: 'Locks held cluster-wide', registers,
      collect() {
        this.set(snap().locks?.held ?? 0)
      },
    })
    new Gauge({
      name: 'chorus_cluster_lock_waiters', help: 'Lock requests queued cluster-wide', registers,
      collect() {
        this.set(snap().locks?.waiters ?? 0)
      },
    })
    new Gauge({
      name: 'chorus_cluster_singleton_held', help: 'Whether each singleton has a live holder (1) or not (0)', labelNames: ['name'] as const, registers,
      collect() {
        this.reset()
        for (const s of snap().jobs?.singletons ?? []) this.set({ name: s.name }, s.holder && s.live ? 1 : 0)
      },
    })
  }

  get contentType(): string {
    return this.registry.contentType
  }

  text(): Promise<string> {
    return this.registry.metrics()
  }
}
