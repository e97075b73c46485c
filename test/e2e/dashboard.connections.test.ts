// The dashboard process builds one foundation: its connections, as PostgreSQL lists them by
// application_name (`chorus:<purpose>:<instanceId>`), are one work pool within its pool size, one
// LISTEN connection and the bus's one publishing client — whatever the page, the API, the stream
// and the Eureka registry ask of it at once.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { eventually } from '../helpers/cluster.js'
import { startDashboardProcess, type DashboardProcess } from '../helpers/dashboard.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

const password = 'dashboard-connections-password'
/** The dashboard's default pool size (DashboardOptions.poolSize). */
const POOL_SIZE = 4

describe('the dashboard process and its database connections', () => {
  let db: TestDatabase
  let dash: DashboardProcess

  beforeAll(async () => {
    db = await testDatabase()
    dash = await startDashboardProcess(db.url, password, 60_000)
  })

  afterAll(async () => {
    await dash?.stop()
    await db?.drop()
  })

  /** The process's connections by purpose: every name that ends in its pid, whatever it calls itself. */
  const connections = async (pid: number) => {
    const rows = await db.sql<{ application_name: string; n: number }[]>`
      select application_name, count(*)::int as n from pg_stat_activity
      where application_name like 'chorus:%' and application_name like ${`%-${pid}`}
      group by application_name order by application_name`
    return Object.fromEntries(rows.map((r) => [r.application_name, r.n]))
  }

  it('holds one LISTEN connection and a work pool within one pool size, under concurrent API, stream and Eureka traffic', async () => {
    const { url, token } = dash
    const pid = dash.child.pid!
    const bearer = { authorization: `Bearer ${token}` }
    const basic = { authorization: `Basic ${Buffer.from(`admin:${password}`).toString('base64')}` }
    const stream = await fetch(`${url}/api/stream`, { headers: bearer })
    expect(stream.status).toBe(200)
    const register = await fetch(`${url}/eureka/apps/ORDERS`, {
      method: 'POST',
      headers: { ...basic, 'content-type': 'application/json' },
      body: JSON.stringify({ instance: { app: 'ORDERS', instanceId: 'orders-1', hostName: 'orders-1.test', port: 9000, leaseInfo: { durationInSecs: 30 } } }),
    })
    expect(register.status).toBe(204)
    // Enough concurrent work to fill the pool: every panel, the registry and renewals at once.
    const panels = ['overview', 'instances', 'events', 'locks', 'jobs', 'bus', 'caches', 'realtime', 'history', 'tokens', 'session']
    const answers = await Promise.all([
      ...panels.flatMap((p) => [fetch(`${url}/api/${p}`, { headers: bearer }), fetch(`${url}/api/${p}`, { headers: basic })]),
      ...Array.from({ length: 8 }, () => fetch(`${url}/eureka/apps`, { headers: { ...basic, accept: 'application/json' } })),
      ...Array.from({ length: 8 }, () => fetch(`${url}/eureka/apps/ORDERS/orders-1`, { method: 'PUT', headers: basic })),
    ])
    expect(answers.map((a) => a.status).filter((s) => s !== 200)).toEqual([])
    const snapshot = (await (await fetch(`${url}/api/instances`, { headers: bearer })).json()) as { instances: { id: string; kind: string }[] }
    expect(snapshot.instances.map((i) => [i.id, i.kind])).toEqual([['ORDERS:orders-1', 'eureka']])

    // The short-lived clients of the start (the URL probe, the migration session) are gone.
    await eventually(async () => Object.keys(await connections(pid)).every((name) => /^chorus:(work|listen|publish):/.test(name)), 'only the foundation\'s clients', 10_000, 100)
    const held = await connections(pid)
    console.log(`dashboard pid ${pid} connections: ${JSON.stringify(held)}`)
    const names = Object.keys(held)
    // One foundation: every client carries the same instance id.
    expect(new Set(names.map((n) => n.split(':').slice(2).join(':')))).toEqual(new Set([`dashboard-${pid}`]))
    expect(held[`chorus:listen:dashboard-${pid}`]).toBe(1)
    expect(held[`chorus:work:dashboard-${pid}`]).toBeGreaterThanOrEqual(1)
    expect(held[`chorus:work:dashboard-${pid}`]).toBeLessThanOrEqual(POOL_SIZE)
    expect(held[`chorus:publish:dashboard-${pid}`] ?? 0).toBeLessThanOrEqual(1)
    await stream.body?.cancel()
  })
})
