// Readiness as `chorus nginx --watch` sees it: real HTTP servers answer the readiness path with
// 200, 503, 404, or not at all; the prober's verdicts, and the nginx upstream rendered from them.
import { createServer, type Server } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { renderNginx } from '../../src/balancer/nginx.js'
import { ReadinessProber } from '../../src/balancer/readiness.js'
import type { UpstreamMember } from '../../src/balancer/watcher.js'

describe('readiness of the members, for the generated nginx config', () => {
  const servers: Server[] = []
  const members: UpstreamMember[] = []
  const answer: Record<string, number> = { ready: 200, isolated: 503, plain: 404 }

  beforeAll(async () => {
    for (const id of Object.keys(answer)) {
      const server = createServer((req, res) => void res.writeHead(req.url === '/health/ready' ? answer[id]! : 200).end())
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
      servers.push(server)
      members.push({ id, epoch: 1, url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, status: 'up' })
    }
    // A member whose port answers nothing (its process is gone).
    const gone = createServer()
    await new Promise<void>((r) => gone.listen(0, '127.0.0.1', r))
    const port = (gone.address() as { port: number }).port
    await new Promise((r) => gone.close(r))
    members.push({ id: 'gone', epoch: 1, url: `http://127.0.0.1:${port}`, status: 'up' })
  })

  afterAll(async () => {
    for (const s of servers) await new Promise((r) => s.close(r))
  })

  it('marks a 5xx answer not ready at once, a 4xx (no such route) ready, and no answer not ready after two probes', async () => {
    let changes = 0
    const prober = new ReadinessProber({ onChange: () => void changes++ })
    prober.track(members)
    await prober.probe()
    expect(['ready', 'isolated', 'plain', 'gone'].map((id) => prober.isReady(id))).toEqual([true, false, true, true])
    await prober.probe()
    expect(prober.isReady('gone')).toBe(false)
    expect(changes).toBe(2)
    answer.isolated = 200
    await prober.probe()
    expect(prober.isReady('isolated')).toBe(true)
    expect(changes).toBe(3)
    answer.isolated = 503
    await prober.probe()

    const conf = renderNginx(members, { full: false }, (id) => prober.isReady(id))
    const line = (id: string) => conf.split('\n').find((l) => l.endsWith(`# ${id}`) || l.includes(`# ${id} (`))
    expect(line('ready')).toMatch(/server 127\.0\.0\.1:\d+ max_fails=1 fail_timeout=5s; # ready$/)
    expect(line('plain')).toMatch(/max_fails=1/)
    expect(line('isolated')).toMatch(/server 127\.0\.0\.1:\d+ down; # isolated \(not ready\)$/)
    expect(line('gone')).toMatch(/ down; # gone \(not ready\)$/)
  })
})
