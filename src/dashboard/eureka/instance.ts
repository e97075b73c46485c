/**
 * A Eureka instance as Chorus keeps it: the registration a client sent, validated and reduced to
 * the fields Eureka v2 clients read back, stored in the member row's `metadata.eureka`. Liveness
 * (lease, renewals, down) lives in the row itself, like any member's.
 */
import { ChorusError } from '../../errors.js'

export const STATUSES = ['UP', 'DOWN', 'STARTING', 'OUT_OF_SERVICE', 'UNKNOWN'] as const
export type EurekaStatus = (typeof STATUSES)[number]

/** Lease duration when a registration names none (Eureka's own default is 90 s). */
export const DEFAULT_LEASE_SEC = 30
export const MAX_LEASE_SEC = 3600
const MAX_METADATA_BYTES = 8192

export interface StoredInstance {
  readonly app: string
  readonly instanceId: string
  readonly hostName: string
  readonly ipAddr: string
  readonly port: number
  readonly portEnabled: boolean
  readonly securePort: number
  readonly securePortEnabled: boolean
  readonly vipAddress: string | null
  readonly secureVipAddress: string | null
  /** The status the client reports. */
  readonly status: EurekaStatus
  /** Set by an operator (status change API); UNKNOWN when none. */
  readonly overriddenStatus: EurekaStatus
  readonly homePageUrl: string | null
  readonly statusPageUrl: string | null
  readonly healthCheckUrl: string | null
  readonly dataCenterInfo: { readonly '@class': string; readonly name: string }
  readonly renewalIntervalInSecs: number
  readonly durationInSecs: number
  readonly metadata: Readonly<Record<string, string>>
  readonly countryId: number
  readonly lastDirtyTimestamp: string
}

/** What a registered instance looks like to Eureka clients: status override first. */
export function effectiveStatus(i: Pick<StoredInstance, 'status' | 'overriddenStatus'>): EurekaStatus {
  return i.overriddenStatus !== 'UNKNOWN' ? i.overriddenStatus : i.status
}

/** The member status that stands for a Eureka status: only UP takes traffic. */
export function memberStatusOf(status: EurekaStatus): 'up' | 'draining' {
  return status === 'UP' ? 'up' : 'draining'
}

export function memberId(app: string, instanceId: string): string {
  return `${app}:${instanceId}`
}

export function parseStatus(value: unknown): EurekaStatus {
  const v = typeof value === 'string' ? value.toUpperCase() : ''
  if (!(STATUSES as readonly string[]).includes(v)) throw bad(`status must be one of ${STATUSES.join(', ')}`)
  return v as EurekaStatus
}

/** Validates a registration body (`{ instance: {...} }`, as Eureka v2 clients send it) for `app`. */
export function parseRegistration(app: string, body: unknown): StoredInstance {
  const inst = (body as { instance?: unknown } | null)?.instance
  if (typeof inst !== 'object' || inst === null || Array.isArray(inst)) throw bad('the body must be {"instance": {...}}')
  const o = inst as Record<string, unknown>
  const hostName = text(o.hostName, 'hostName', 255)
  if (!hostName) throw bad('instance.hostName is required')
  const instanceId = text(o.instanceId, 'instanceId', 200) ?? hostName
  if (instanceId.includes('/')) throw bad('instance.instanceId must not contain "/"')
  const port = portOf(o.port, 'port', 80, true)
  const securePort = portOf(o.securePort, 'securePort', 443, false)
  const lease = (o.leaseInfo ?? {}) as Record<string, unknown>
  const durationInSecs = num(lease.durationInSecs, 'leaseInfo.durationInSecs', DEFAULT_LEASE_SEC, 1, MAX_LEASE_SEC)
  const renewalIntervalInSecs = num(lease.renewalIntervalInSecs, 'leaseInfo.renewalIntervalInSecs', Math.max(1, Math.floor(durationInSecs / 3)), 0, MAX_LEASE_SEC)
  const dc = (o.dataCenterInfo ?? {}) as Record<string, unknown>
  httpUrl(o.secureHealthCheckUrl, 'secureHealthCheckUrl') // not kept, but refused like the others
  const metadata: Record<string, string> = {}
  if (o.metadata !== undefined && o.metadata !== null) {
    if (typeof o.metadata !== 'object' || Array.isArray(o.metadata)) throw bad('instance.metadata must be an object')
    for (const [k, v] of Object.entries(o.metadata)) {
      if (k === '@class') continue
      if (k.length > 200 || CONTROL.test(k)) throw bad('instance.metadata keys must be at most 200 characters without control characters')
      metadata[k] = typeof v === 'string' ? v : JSON.stringify(v)
    }
  }
  if (Buffer.byteLength(JSON.stringify(metadata)) > MAX_METADATA_BYTES) throw bad(`instance.metadata must serialise to at most ${MAX_METADATA_BYTES} bytes`)
  return {
    app,
    instanceId,
    hostName,
    ipAddr: text(o.ipAddr, 'ipAddr', 100) ?? hostName,
    port: port.value,
    portEnabled: port.enabled,
    securePort: securePort.value,
    securePortEnabled: securePort.enabled,
    vipAddress: text(o.vipAddress, 'vipAddress', 255),
    secureVipAddress: text(o.secureVipAddress, 'secureVipAddress', 255),
    status: o.status === undefined ? 'UP' : parseStatus(o.status),
    overriddenStatus: 'UNKNOWN',
    homePageUrl: httpUrl(o.homePageUrl, 'homePageUrl'),
    statusPageUrl: httpUrl(o.statusPageUrl, 'statusPageUrl'),
    healthCheckUrl: httpUrl(o.healthCheckUrl, 'healthCheckUrl'),
    dataCenterInfo: {
      '@class': text(dc['@class'], 'dataCenterInfo.@class', 200) ?? 'com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo',
      name: text(dc.name, 'dataCenterInfo.name', 100) ?? 'MyOwn',
    },
    renewalIntervalInSecs,
    durationInSecs,
    metadata,
    countryId: num(o.countryId, 'countryId', 1, 0, 1000),
    lastDirtyTimestamp: digits(o.lastDirtyTimestamp, 'lastDirtyTimestamp') ?? String(Date.now()),
  }
}

/** The URL fields Eureka clients send (and the dashboard shows as links). */
const URL_FIELDS = ['homePageUrl', 'statusPageUrl', 'healthCheckUrl', 'secureHealthCheckUrl'] as const
export const MAX_URL_LENGTH = 1000

/** Normalises an (already decoded) application name as Eureka does (upper case); refuses what cannot be one. */
export function appName(raw: string): string {
  const app = raw.toUpperCase()
  if (!/^[A-Z0-9][A-Z0-9._-]{0,99}$/.test(app)) throw bad(`application name "${app.slice(0, 100)}" must be 1-100 of A-Z 0-9 . _ -`)
  return app
}

function bad(why: string): ChorusError {
  return new ChorusError('CHORUS_ERR_DASHBOARD_BAD_REQUEST', [why])
}

const CONTROL = /[\u0000-\u001f\u007f]/

function text(v: unknown, field: string, max: number): string | null {
  if (v === undefined || v === null || v === '') return null
  if (typeof v !== 'string' && typeof v !== 'number') throw bad(`instance.${field} must be a string`)
  const s = String(v)
  if (s.length > max || CONTROL.test(s)) throw bad(`instance.${field} must be at most ${max} characters without control characters`)
  return s
}

/**
 * An absolute http(s) URL without credentials, or null. Anything else (`javascript:`, `data:`, a
 * relative path) is refused: these URLs are shown to operators as links.
 */
function httpUrl(v: unknown, field: (typeof URL_FIELDS)[number]): string | null {
  const s = text(v, field, MAX_URL_LENGTH)
  if (s === null) return null
  if (!isHttpUrl(s)) throw bad(`instance.${field} must be an absolute http:// or https:// URL without user or password`)
  return s
}

/** Whether `s` is an absolute http(s) URL with a host and no user or password. */
export function isHttpUrl(s: unknown): s is string {
  if (typeof s !== 'string' || s.length > MAX_URL_LENGTH || CONTROL.test(s) || !/^https?:\/\//i.test(s)) return false
  try {
    const u = new URL(s)
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '' && u.username === '' && u.password === ''
  } catch {
    return false
  }
}

function digits(v: unknown, field: string): string | null {
  const s = text(v, field, 20)
  if (s !== null && !/^\d+$/.test(s)) throw bad(`instance.${field} must be a number of milliseconds`)
  return s
}

function num(v: unknown, field: string, dflt: number, min: number, max: number): number {
  if (v === undefined || v === null || v === '') return dflt
  const n = Number(v)
  if (!Number.isFinite(n) || n < min || n > max) throw bad(`instance.${field} must be a number from ${min} to ${max}`)
  return n
}

/** Eureka sends ports as `8080` or `{"$": 8080, "@enabled": "true"}`. */
function portOf(v: unknown, field: string, dflt: number, enabledByDefault: boolean): { value: number; enabled: boolean } {
  if (v === undefined || v === null) return { value: dflt, enabled: enabledByDefault && field === 'port' }
  if (typeof v === 'object' && !Array.isArray(v)) {
    const o = v as Record<string, unknown>
    const enabled = o['@enabled'] === undefined ? enabledByDefault : o['@enabled'] === true || o['@enabled'] === 'true'
    return { value: num(o.$, field, dflt, 0, 65535), enabled }
  }
  return { value: num(v, field, dflt, 0, 65535), enabled: enabledByDefault }
}
