// The deployment recipes under deploy/ (docs/operations.md) parse, and say only what Chorus knows:
// every environment variable they give an instance is one src/options.ts or the CLI reads, every
// probe path is one src/health.ts answers, and every stop deadline is above closeTimeoutMs.
import { readdirSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { parse, parseAllDocuments } from 'yaml'
import { resolveOptions } from '../../src/options.js'

const root = new URL('../..', import.meta.url).pathname
const deploy = join(root, 'deploy')
const read = (path: string) => readFileSync(join(deploy, path), 'utf8')
const closeTimeoutMs = resolveOptions({ preset: 'local' }, {}).closeTimeoutMs

/** Every environment variable name src/options.ts or the CLI (src/cli/) reads. */
const known = (() => {
  const sources = [join(root, 'src/options.ts'), ...readdirSync(join(root, 'src/cli')).map((f) => join(root, 'src/cli', f))]
  const names = new Set<string>()
  for (const file of sources) {
    const text = readFileSync(file, 'utf8')
    for (const m of text.matchAll(/envStr\(env, '([A-Z0-9_]+)'\)|envInt\(env, '([A-Z0-9_]+)'\)|envFile\(env, '([A-Z0-9_]+)'\)|process\.env\.([A-Z0-9_]+)/g)) names.add(m[1] ?? m[2] ?? m[3] ?? m[4]!)
  }
  return names
})()

const healthPaths = new Set([...readFileSync(join(root, 'src/health.ts'), 'utf8').matchAll(/\/health\/(live|ready)/g)].map((m) => m[0]))

function expectKnown(names: Iterable<string>, where: string): void {
  const unknown = [...names].filter((n) => !known.has(n))
  expect(unknown, `${where}: variables neither src/options.ts nor the CLI reads`).toEqual([])
}

function probePaths(text: string): string[] {
  return [...text.matchAll(/\/health\/[a-z]+/g)].map((m) => m[0])
}

interface K8sContainer {
  env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[]
  readinessProbe?: { httpGet?: { path: string } }
  livenessProbe?: { httpGet?: { path: string } }
  lifecycle?: { preStop?: { exec?: { command: string[] } } }
}

describe('the deployment recipes', () => {
  it('knows the environment variables it reads (the check itself finds them)', () => {
    for (const name of ['DATABASE_URL', 'CHORUS_SECRET', 'CHORUS_INSTANCE_ID', 'CHORUS_ADVERTISE_URL', 'PORT', 'CHORUS_DASHBOARD_PASSWORD']) expect(known.has(name), name).toBe(true)
    expect([...healthPaths].sort()).toEqual(['/health/live', '/health/ready'])
    expect(closeTimeoutMs).toBe(25_000)
  })

  it('Dockerfile: its variables and its health check are Chorus\'s', () => {
    const text = read('docker/Dockerfile')
    const env = [...text.matchAll(/^ENV\s+([\s\S]*?)(?<!\\)$/gm)].flatMap((m) => [...m[1]!.matchAll(/([A-Z][A-Z0-9_]*)=/g)].map((v) => v[1]!))
    expect(env.length).toBeGreaterThan(0)
    expectKnown(env, 'Dockerfile')
    expect(probePaths(text).length).toBeGreaterThan(0)
    for (const p of probePaths(text)) expect(healthPaths.has(p), p).toBe(true)
    expect(text).toMatch(/^STOPSIGNAL SIGTERM$/m)
  })

  it('compose: three instances with distinct ids, PostgreSQL, nginx from chorus nginx, stop grace above closeTimeoutMs', () => {
    const compose = parse(read('docker/compose.yml'), { merge: true }) as { services: Record<string, { image?: string; environment?: Record<string, string>; command?: string[]; stop_grace_period?: string; healthcheck?: { test: string[] } }> }
    const apps = Object.entries(compose.services).filter(([, s]) => s.image === 'chorus-app' && !s.command)
    expect(apps.map(([name]) => name)).toEqual(['app-1', 'app-2', 'app-3'])
    expect(new Set(apps.map(([, s]) => s.environment!.CHORUS_INSTANCE_ID)).size).toBe(3)
    for (const [name, s] of apps) {
      expectKnown(Object.keys(s.environment!), `compose ${name}`)
      expect(Number(s.environment!.CHORUS_CLOSE_TIMEOUT_MS ?? closeTimeoutMs)).toBeLessThan(Number.parseInt(s.stop_grace_period!, 10) * 1000)
      for (const p of probePaths(s.healthcheck!.test.join(' '))) expect(healthPaths.has(p), p).toBe(true)
    }
    const config = compose.services['nginx-config']!
    expect(config.command!.slice(0, 3)).toEqual(['npx', 'chorus', 'nginx'])
    expectKnown(Object.keys(config.environment!), 'compose nginx-config')
    expect(compose.services.nginx!.image).toMatch(/^nginx:/)
    expect(compose.services.postgres!.image).toMatch(/^postgres:\d+/)
  })

  it('Kubernetes: readiness /health/ready, liveness /health/live, a preStop drain, the pod name as instance id, grace above closeTimeoutMs', () => {
    const docs = readdirSync(join(deploy, 'k8s')).flatMap((f) => parseAllDocuments(read(join('k8s', f))).map((d) => d.toJS() as { kind: string; spec?: unknown }))
    expect(docs.map((d) => d.kind).sort()).toEqual(['Deployment', 'Secret', 'Service'])
    const deployment = docs.find((d) => d.kind === 'Deployment') as { spec: { replicas: number; template: { spec: { terminationGracePeriodSeconds: number; containers: K8sContainer[] } } } }
    expect(deployment.spec.replicas).toBe(3)
    const pod = deployment.spec.template.spec
    const [app] = pod.containers
    expect(app!.readinessProbe!.httpGet!.path).toBe('/health/ready')
    expect(app!.livenessProbe!.httpGet!.path).toBe('/health/live')
    for (const p of [app!.readinessProbe!.httpGet!.path, app!.livenessProbe!.httpGet!.path]) expect(healthPaths.has(p)).toBe(true)
    expect(app!.lifecycle!.preStop!.exec!.command.length).toBeGreaterThan(0)
    const env = app!.env!
    expect(env.find((e) => e.name === 'CHORUS_INSTANCE_ID')!.valueFrom!.fieldRef!.fieldPath).toBe('metadata.name')
    // A variable that only serves as $(NAME) in another value (the pod IP) is the manifest's own.
    const helpers = new Set(env.filter((e) => env.some((o) => o.value?.includes(`$(${e.name})`))).map((e) => e.name))
    expectKnown(env.map((e) => e.name).filter((n) => !helpers.has(n)), 'deployment.yaml')
    const close = Number(env.find((e) => e.name === 'CHORUS_CLOSE_TIMEOUT_MS')?.value ?? closeTimeoutMs)
    const preStopSeconds = Number(/setTimeout\(\(\) => \{\}, (\d+)\)/.exec(app!.lifecycle!.preStop!.exec!.command.join(' '))?.[1] ?? 0) / 1000
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(preStopSeconds + close / 1000)
  })

  it('pm2: three apps with their own ids and ports, kill_timeout above closeTimeoutMs', () => {
    const config = createRequire(import.meta.url)(join(deploy, 'pm2/ecosystem.config.cjs')) as { apps: { name: string; kill_timeout: number; env: Record<string, string> }[] }
    expect(config.apps).toHaveLength(3)
    expect(new Set(config.apps.map((a) => a.env.CHORUS_INSTANCE_ID)).size).toBe(3)
    expect(new Set(config.apps.map((a) => a.env.PORT)).size).toBe(3)
    for (const a of config.apps) {
      expectKnown(Object.keys(a.env), `pm2 ${a.name}`)
      expect(a.kill_timeout).toBeGreaterThan(Number(a.env.CHORUS_CLOSE_TIMEOUT_MS ?? closeTimeoutMs))
    }
  })

  it('systemd: the unit and its environment file, TimeoutStopSec above closeTimeoutMs', () => {
    const unit = read('systemd/chorus@.service')
    const fromUnit = [...unit.matchAll(/^Environment=([A-Z][A-Z0-9_]*)=(.*)$/gm)]
    const fromFile = [...read('systemd/app.env').matchAll(/^([A-Z][A-Z0-9_]*)=/gm)]
    expectKnown([...fromUnit, ...fromFile].map((m) => m[1]!), 'systemd')
    expect(unit).toMatch(/^EnvironmentFile=\/etc\/chorus\/app\.env$/m)
    const close = Number(fromUnit.find((m) => m[1] === 'CHORUS_CLOSE_TIMEOUT_MS')?.[2] ?? closeTimeoutMs)
    expect(Number(/^TimeoutStopSec=(\d+)$/m.exec(unit)![1]) * 1000).toBeGreaterThan(close)
  })

  it('docs/operations.md points at every recipe', () => {
    const ops = readFileSync(join(root, 'docs/operations.md'), 'utf8')
    for (const file of ['docker/Dockerfile', 'docker/compose.yml', 'k8s/deployment.yaml', 'k8s/service.yaml', 'k8s/secret.yaml', 'pm2/ecosystem.config.cjs', 'systemd/chorus@.service', 'systemd/app.env']) {
      expect(ops, file).toContain(`deploy/${file}`)
    }
  })
})
