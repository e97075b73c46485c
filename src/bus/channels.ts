/**
 * Every bus channel Chorus itself uses, in one place. Application topics live under `chorus.topic.`;
 * nothing else may publish on a `chorus.` channel.
 */
export const channels = {
  /** Membership changes (join, leave, status, down): watchers refresh their view. */
  members: 'chorus.members',
  /** Job wake-ups: a job became runnable. */
  jobs: 'chorus.jobs',
  /** Singleton lease changes. */
  singletons: 'chorus.singletons',
  /** Lock releases: waiters retry. */
  locks: 'chorus.locks',
  /** Realtime fan-out (log entries by reference). */
  realtime: 'chorus.realtime',
  /** Realtime control (disconnect a user everywhere, …). */
  realtimeControl: 'chorus.realtime.control',
  /** Dashboard control actions (drain an instance, …). */
  dashboardControl: 'chorus.dashboard.control',
  /** Shared configuration: a new version was stored (`{ version }`). */
  config: 'chorus.config',
  /** Near cache `name`'s invalidations. */
  cache: (name: string) => `chorus.cache.${name}`,
  /** Shared map `name`'s change notices. */
  map: (name: string) => `chorus.map.${name}`,
  /** Topic `name`'s messages. */
  topic: (name: string) => `chorus.topic.${name}`,
  /** Reliable topic `name`'s publish notices. */
  reliableTopic: (name: string) => `chorus.rtopic.${name}`,
} as const
