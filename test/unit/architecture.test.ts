// The layers of docs/architecture.md, checked against the imports in src/: a module may import only
// the modules its row names, and no two folders import each other at run time (directly or around
// a loop). Type-only imports are left out: they vanish from the built code.
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const src = resolve(dirname(fileURLToPath(import.meta.url)), '../../src')

const base = ['util', 'errors', 'events', 'log', 'random', 'processes']
const foundation = [...base, 'db', 'bus', 'options', 'membership', 'subsystem']

/** Who may import whom: top-level files and folders of src/, by module name. */
const allowed: Record<string, readonly string[]> = {
  util: ['errors'],
  errors: [],
  events: ['errors'],
  log: [],
  random: [],
  processes: [],
  db: [...base],
  bus: [...base, 'db'],
  options: [...base, 'bus'],
  membership: [...base, 'db', 'bus', 'options'],
  subsystem: [...base, 'db', 'bus', 'options', 'membership'],
  assembly: [...base, 'db', 'bus', 'options'],
  health: [...base],
  locks: [...foundation],
  jobs: [...foundation],
  cache: [...foundation, 'state'],
  state: [...foundation],
  // The minute sweep of expired map entries, topic messages and sessions: above state/ and sessions/.
  sweep: [...foundation, 'state', 'sessions'],
  sessions: [...foundation, 'state'],
  files: [...foundation, 'locks'],
  rpc: [...foundation],
  realtime: [...foundation],
  config: [...foundation],
  // Metrics and the instance reporter are subsystems too; the dashboard process reads the others' status.
  dashboard: [...foundation, 'assembly', 'state', 'cache', 'jobs', 'locks', 'config', 'http'],
  balancer: [...foundation, 'assembly', 'http'],
  cluster: [...foundation, 'health', 'locks', 'jobs', 'cache', 'state', 'sessions', 'files', 'rpc', 'realtime', 'config', 'dashboard'],
  create: [...foundation, 'assembly', 'cluster', 'sweep', 'health', 'locks', 'jobs', 'cache', 'state', 'sessions', 'files', 'rpc', 'realtime', 'config', 'dashboard'],
  integrations: [...foundation, 'cluster', 'create', 'health', 'sessions', 'realtime', 'rpc', 'files', 'dashboard'],
  index: ['*'],
  cli: ['*'],
}

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    return statSync(path).isDirectory() ? files(path) : path.endsWith('.ts') ? [path] : []
  })
}

/** The module of a path under src/: its top folder, or its file name without .ts. */
function moduleOf(path: string): string {
  const top = relative(src, path).split('/')[0]!
  return top.replace(/\.(ts|js)$/, '')
}

function edges(): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>()
  for (const file of files(src)) {
    const from = moduleOf(file)
    const text = readFileSync(file, 'utf8')
    // Type-only imports are erased at build time and cannot make a loop at run time; every other import counts.
    const runtime = text.replace(/^(import|export) type [^;]*?from '[^']+'/gms, '')
    for (const m of runtime.matchAll(/(?:from|import\()\s*'(\.{1,2}\/[^']+)'/g)) {
      const to = moduleOf(resolve(dirname(file), m[1]!))
      if (to === from) continue
      if (!out.has(from)) out.set(from, new Set())
      out.get(from)!.add(to)
    }
  }
  return out
}

describe('architecture', () => {
  const graph = edges()

  it('names every module of src/ in the layer table', () => {
    const modules = new Set(files(src).map(moduleOf))
    expect([...modules].filter((m) => !(m in allowed)).sort()).toEqual([])
  })

  it('has each module import only what its layer allows', () => {
    const bad: string[] = []
    for (const [from, tos] of graph) {
      const ok = allowed[from] ?? []
      if (ok.includes('*')) continue
      for (const to of tos) if (!ok.includes(to)) bad.push(`${from} → ${to}`)
    }
    expect(bad.sort()).toEqual([])
  })

  it('has no loop between modules', () => {
    const loops: string[] = []
    const visit = (node: string, path: string[]) => {
      for (const next of graph.get(node) ?? []) {
        if (allowed[next]?.includes('*')) continue
        if (path.includes(next)) loops.push([...path.slice(path.indexOf(next)), next].join(' → '))
        else visit(next, [...path, next])
      }
    }
    for (const node of graph.keys()) if (!allowed[node]?.includes('*')) visit(node, [node])
    expect([...new Set(loops)]).toEqual([])
  })
})
