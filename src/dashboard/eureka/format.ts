/**
 * Eureka v2 representations of the registry, in JSON (the Jackson codec's shape: `"$"` and
 * `"@enabled"` for ports, `"@class"` for data-center info) and XML (the XStream shape: attributes on
 * ports, `overriddenstatus` in lower case). The XML is written by hand: it is a fixed, shallow
 * document of escaped text, and no maintained builder would make it shorter or safer.
 */
import { effectiveStatus, type StoredInstance } from './instance.js'

export interface RegistryEntry {
  readonly stored: StoredInstance
  readonly registeredAt: Date
  readonly lastRenewalAt: Date
  readonly lastUpdatedAt: Date
}

export interface Application {
  readonly name: string
  readonly instances: readonly RegistryEntry[]
}

type Json = Record<string, unknown>

export function instanceJson(e: RegistryEntry): Json {
  const i = e.stored
  return {
    instanceId: i.instanceId,
    hostName: i.hostName,
    app: i.app,
    ipAddr: i.ipAddr,
    status: effectiveStatus(i),
    overriddenStatus: i.overriddenStatus,
    port: { $: i.port, '@enabled': String(i.portEnabled) },
    securePort: { $: i.securePort, '@enabled': String(i.securePortEnabled) },
    countryId: i.countryId,
    dataCenterInfo: { '@class': i.dataCenterInfo['@class'], name: i.dataCenterInfo.name },
    leaseInfo: {
      renewalIntervalInSecs: i.renewalIntervalInSecs,
      durationInSecs: i.durationInSecs,
      registrationTimestamp: e.registeredAt.getTime(),
      lastRenewalTimestamp: e.lastRenewalAt.getTime(),
      evictionTimestamp: 0,
      serviceUpTimestamp: e.registeredAt.getTime(),
    },
    metadata: Object.keys(i.metadata).length === 0 ? { '@class': 'java.util.Collections$EmptyMap' } : { ...i.metadata },
    homePageUrl: i.homePageUrl,
    statusPageUrl: i.statusPageUrl,
    healthCheckUrl: i.healthCheckUrl,
    vipAddress: i.vipAddress,
    secureVipAddress: i.secureVipAddress,
    isCoordinatingDiscoveryServer: 'false',
    lastUpdatedTimestamp: String(e.lastUpdatedAt.getTime()),
    lastDirtyTimestamp: i.lastDirtyTimestamp,
    actionType: 'ADDED',
  }
}

export function applicationJson(app: Application): Json {
  return { name: app.name, instance: app.instances.map(instanceJson) }
}

export function applicationsJson(apps: readonly Application[], delta = false): Json {
  return {
    applications: {
      versions__delta: '1',
      apps__hashcode: hashcode(apps),
      application: delta ? [] : apps.map(applicationJson),
    },
  }
}

/** Eureka's reconciliation hash: `STATUS_count_` for each status present, in status order. */
export function hashcode(apps: readonly Application[]): string {
  const counts = new Map<string, number>()
  for (const a of apps) for (const e of a.instances) counts.set(effectiveStatus(e.stored), (counts.get(effectiveStatus(e.stored)) ?? 0) + 1)
  return [...counts.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([s, n]) => `${s}_${n}_`).join('')
}

// ---- XML --------------------------------------------------------------------------------------

export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!)
}

function el(name: string, value: string | number | null, attrs: Record<string, string> = {}): string {
  const a = Object.entries(attrs).map(([k, v]) => ` ${k}="${escapeXml(v)}"`).join('')
  if (value === null) return `<${name}${a}/>`
  return `<${name}${a}>${escapeXml(String(value))}</${name}>`
}

/** Metadata keys become element names; keys that cannot be one are left out of the XML form. */
const XML_NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/

export function instanceXml(e: RegistryEntry): string {
  const i = e.stored
  const meta = Object.entries(i.metadata).filter(([k]) => XML_NAME.test(k) && !/^xml/i.test(k))
  return [
    '<instance>',
    el('instanceId', i.instanceId),
    el('hostName', i.hostName),
    el('app', i.app),
    el('ipAddr', i.ipAddr),
    el('status', effectiveStatus(i)),
    el('overriddenstatus', i.overriddenStatus),
    el('port', i.port, { enabled: String(i.portEnabled) }),
    el('securePort', i.securePort, { enabled: String(i.securePortEnabled) }),
    el('countryId', i.countryId),
    `<dataCenterInfo class="${escapeXml(i.dataCenterInfo['@class'])}">${el('name', i.dataCenterInfo.name)}</dataCenterInfo>`,
    '<leaseInfo>',
    el('renewalIntervalInSecs', i.renewalIntervalInSecs),
    el('durationInSecs', i.durationInSecs),
    el('registrationTimestamp', e.registeredAt.getTime()),
    el('lastRenewalTimestamp', e.lastRenewalAt.getTime()),
    el('evictionTimestamp', 0),
    el('serviceUpTimestamp', e.registeredAt.getTime()),
    '</leaseInfo>',
    meta.length === 0 ? '<metadata class="java.util.Collections$EmptyMap"/>' : `<metadata>${meta.map(([k, v]) => el(k, v)).join('')}</metadata>`,
    i.homePageUrl === null ? '' : el('homePageUrl', i.homePageUrl),
    i.statusPageUrl === null ? '' : el('statusPageUrl', i.statusPageUrl),
    i.healthCheckUrl === null ? '' : el('healthCheckUrl', i.healthCheckUrl),
    i.vipAddress === null ? '' : el('vipAddress', i.vipAddress),
    i.secureVipAddress === null ? '' : el('secureVipAddress', i.secureVipAddress),
    el('isCoordinatingDiscoveryServer', 'false'),
    el('lastUpdatedTimestamp', e.lastUpdatedAt.getTime()),
    el('lastDirtyTimestamp', i.lastDirtyTimestamp),
    el('actionType', 'ADDED'),
    '</instance>',
  ].join('')
}

export function applicationXml(app: Application): string {
  return `<application>${el('name', app.name)}${app.instances.map(instanceXml).join('')}</application>`
}

export function applicationsXml(apps: readonly Application[], delta = false): string {
  return `<applications>${el('versions__delta', 1)}${el('apps__hashcode', hashcode(apps))}${delta ? '' : apps.map(applicationXml).join('')}</applications>`
}

export const XML_PROLOG = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
