/** Chorus: one Node.js application server, run as a coherent cluster on one shared PostgreSQL. */
export { createCluster, Cluster, type ClusterState } from './cluster.js'
export { ChorusError, isChorusError, catalog as errorCatalog, type ErrorCode } from './errors.js'
export type { ClusterEvents, EventName, MemberInfo, MemberStatus, GapReason } from './events.js'
export type { ClusterOptions } from './options.js'
export type { Membership, SelfInfo, SelfState } from './membership/membership.js'
export type { Bus, BusHandler } from './bus/bus.js'
export type { Transport, Envelope, TransportHandlers } from './bus/transport.js'
