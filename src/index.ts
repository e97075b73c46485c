/** Chorus: one Node.js application server, run as a coherent cluster on one shared PostgreSQL. */
export { Cluster, type ClusterState } from './cluster.js'
export { createCluster } from './create.js'
export { ChorusError, isChorusError, catalog as errorCatalog, type ErrorCode } from './errors.js'
export type { ClusterEvents, EventName, MemberInfo, MemberStatus, GapReason } from './events.js'
export type { ClusterOptions } from './options.js'
export type { Membership, SelfInfo, SelfState } from './membership/membership.js'
export type { Bus, BusHandler } from './bus/bus.js'
export type { Transport, Envelope, TransportHandlers } from './bus/transport.js'
export { MemoryHub, MemoryTransport, type MemoryHubOptions } from './bus/memory.js'
export type { Locks, Lock, LockMode, LockOptions, PathLockOptions } from './locks/locks.js'
export type { LockStatus, LockLeaseInfo } from './locks/status.js'
export type { Jobs } from './jobs/jobs.js'
export type { Singleton } from './jobs/singleton.js'
export type {
  BackoffFunction,
  BackoffOptions,
  CronContext,
  CronHandler,
  CronOptions,
  DefineOptions,
  EnqueueManyItem,
  EnqueueOptions,
  JobContext,
  JobHandler,
  JobInfo,
  JobRecord,
  JobSql,
  JobState,
  SingletonOptions,
  TransactionalJobContext,
  TransactionalJobHandler,
} from './jobs/types.js'
export type { JobStatus, JobCounts, SingletonStatus, CronStatus } from './jobs/status.js'
export type { NearCache, NearCacheOptions, CacheStats, Cacheable } from './cache/near-cache.js'
export type { SharedMap, MapOptions, Entry, MapChange } from './state/map.js'
export type { Topic, TopicMessageMeta } from './state/topic.js'
export type { Codec } from './state/codec.js'
export type { Counter, CounterOptions } from './state/counter.js'
export type { Realtime, AttachOptions, Attachment, AppMessage, AppHandler, RealtimeOptions } from './realtime/gateway.js'
export type { Principal, RealtimeLimits } from './realtime/connection.js'
export type { PresenceSnapshot } from './realtime/presence.js'
export type { ReliableTopic, ReliableTopicOptions, ReliableTopicRetention } from './state/reliable-topic.js'
export type { ReliableSubscription, ReliableSubscribeOptions, ReliableHandler, ReliableMessageMeta, ReliableGap, SubscriptionState } from './state/reliable-subscription.js'
export type { Sessions } from './sessions/sessions.js'
export type { SessionStore, SessionStoreOptions, SessionObject } from './sessions/store.js'
export type { Files } from './files/files.js'
export type {
  FileStore, WriteData, WriteOptions, WriteResult, ReadOptions, ReadStreamOptions, FileStat, FileEntry, FileType, ListOptions,
  MoveOptions, MoveResult, RemoveOptions, RemoveResult, FileLockWait,
} from './files/store.js'
export type { Rpc, RpcContext, RpcHandler, CallOptions, BroadcastOptions, BroadcastResult, FastifyLike, FastifyPluginLike } from './rpc/rpc.js'
export type { Metrics } from './dashboard/metrics.js'
export type { Config, ConfigOptions, ConfigHistoryEntry, ConfigWriteResult, ConfigView, SetOptions as ConfigSetOptions, WriteOptions as ConfigWriteOptions } from './config/config.js'
export type { Health, HealthReport, HealthCheck } from './health.js'
export type { InstanceReport } from './dashboard/report.js'
