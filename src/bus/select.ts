/**
 * Chooses the bus transport from a URL, or takes a ready-made `Transport`:
 *   none, `postgres:` / `postgresql:` → LISTEN/NOTIFY on the cluster's own database (the default;
 *                                        a full postgres:// URL means that database too)
 *   `redis://`, `rediss://`           → Redis Pub/Sub (`?sharded=auto|true|false`, default false)
 *   `nats://` (comma-separated list)   → core NATS
 *   `memory:`                          → one process, on the process-wide hub of the cluster's prefix
 * Any other scheme, or a string that is not a URL, is refused (CHORUS_ERR_BUS_URL_INVALID) before
 * anything connects. PostgreSQL stays the source of truth whichever carries the bus.
 */
import type { Logger } from 'pino'
import type { Db } from '../db/connect.js'
import { ChorusError } from '../errors.js'
import { MemoryTransport, processHub } from './memory.js'
import { NatsTransport } from './nats.js'
import { PostgresTransport } from './postgres.js'
import { RedisTransport } from './redis.js'
import type { Transport } from './transport.js'
import { checkPrefix, describeBusUrl } from './url.js'

/** Where the bus goes: a URL (`bus.url` / `CHORUS_BUS_URL`), or a transport object (option `transport`). */
export type TransportSpec = { url?: string | undefined } | Transport

export interface TransportDeps {
  /** The cluster's database: the PostgreSQL transport runs on it. */
  db?: Db
  log: Logger
  /** Keeps clusters apart on a shared Redis or NATS. Default: the database schema, else `chorus`. */
  prefix?: string
  /** How long payloads sent by reference stay readable (PostgreSQL). Default: 60 000 ms. */
  payloadRetentionMs?: number
  /** The bus's `maxPayloadBytes`: Redis and NATS warn at start when their server takes less. */
  maxPayloadBytes?: number
  /** The bus's `maxQueueBytes`: bounds what Redis and NATS hold while their connection is down. */
  maxQueueBytes?: number
}

export type BusKind = 'postgres' | 'redis' | 'nats' | 'memory'

/** The transport a bus URL names; throws CHORUS_ERR_BUS_URL_INVALID for anything else. */
export function busKind(url: string | undefined): BusKind {
  if (url === undefined || url === '') return 'postgres'
  const scheme = typeof url === 'string' ? /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(url)?.[1]?.toLowerCase() : undefined
  switch (scheme) {
    case 'postgres':
    case 'postgresql':
      return 'postgres'
    case 'redis':
    case 'rediss':
      return 'redis'
    case 'nats':
      return 'nats'
    case 'memory':
      return 'memory'
    default:
      throw invalid(url, scheme === undefined ? 'it is not a URL' : `no transport for "${scheme}:"`)
  }
}

export function isTransport(value: unknown): value is Transport {
  if (value === null || typeof value !== 'object') return false
  const t = value as Record<string, unknown>
  return typeof t.start === 'function' && typeof t.send === 'function' && typeof t.close === 'function'
}

/** Builds the transport `spec` asks for; nothing connects until the bus starts it. */
export function createTransport(spec: TransportSpec, deps: TransportDeps): Transport {
  if (isTransport(spec)) return spec
  const url = spec.url
  const kind = busKind(url)
  const prefix = deps.prefix ?? deps.db?.schema ?? 'chorus'
  const log = deps.log.child({ subsystem: 'bus' })
  switch (kind) {
    case 'postgres':
      if (!deps.db) throw invalid(url ?? 'postgres:', "the PostgreSQL bus runs on the cluster's database, and none was given")
      return new PostgresTransport({ db: deps.db, log, payloadRetentionMs: deps.payloadRetentionMs ?? 60_000 })
    case 'redis': {
      const { url: plain, sharded } = redisUrl(url!)
      return new RedisTransport({ url: plain, prefix, log, sharded, ...limits(deps) })
    }
    case 'nats':
      checkUrls(url!)
      return new NatsTransport({ url: url!, prefix, log, ...limits(deps) })
    case 'memory':
      return new MemoryTransport(processHub(checkPrefix(prefix)))
  }
}

function limits(deps: TransportDeps): { maxPayloadBytes?: number; maxQueueBytes?: number } {
  return {
    ...(deps.maxPayloadBytes === undefined ? {} : { maxPayloadBytes: deps.maxPayloadBytes }),
    ...(deps.maxQueueBytes === undefined ? {} : { maxQueueBytes: deps.maxQueueBytes }),
  }
}

/** Takes Chorus's own `sharded` parameter off a Redis URL (node-redis gets the rest). */
function redisUrl(url: string): { url: string; sharded: boolean | 'auto' } {
  const [u] = checkUrls(url)
  const raw = u!.searchParams.get('sharded')
  u!.searchParams.delete('sharded')
  const values: Record<string, boolean | 'auto'> = { auto: 'auto', true: true, '1': true, false: false, '0': false }
  if (raw !== null && !(raw in values)) throw invalid(url, `sharded=${raw}: use auto, true or false`)
  return { url: u!.toString(), sharded: raw === null ? false : values[raw]! }
}

function checkUrls(url: string): URL[] {
  return url.split(',').map((part) => {
    try {
      const u = new URL(part.trim())
      if (!u.hostname) throw new Error('no host')
      return u
    } catch {
      throw invalid(url, 'it names no host')
    }
  })
}

function invalid(url: unknown, why: string): ChorusError {
  const shown = typeof url === 'string' ? describeBusUrl(url) : `<${typeof url}>`
  return new ChorusError('CHORUS_ERR_BUS_URL_INVALID', [JSON.stringify(shown), why], { details: { url: shown } })
}
