// The PostgreSQL transport against the shared bus contract: each cluster is its own test database
// (NOTIFY does not cross databases); the lost connection is every Chorus backend terminated.
import { pino } from 'pino'
import { afterAll } from 'vitest'
import { createTransport } from '../../src/bus/select.js'
import { connect, type Db } from '../../src/db/connect.js'
import { busContract } from '../contract/bus.contract.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

const log = pino({ level: 'silent' })
const clusters = new Map<string, { test: TestDatabase; db: Db }>()

afterAll(async () => {
  for (const { test, db } of clusters.values()) {
    await db.close(0)
    await test.drop()
  }
})

busContract(
  'PostgreSQL',
  async (cluster) => {
    let c = clusters.get(cluster)
    if (!c) {
      const test = await testDatabase()
      const db = await connect({ url: test.url, schema: 'chorus', instanceId: cluster, poolSize: 2 })
      clusters.set(cluster, (c = { test, db }))
    }
    const make = () => createTransport({ url: 'postgres:' }, { db: c.db, log })
    return [make(), make()]
  },
  {
    interruption: 'every Chorus backend terminated',
    interrupt: async () => {
      for (const { test } of clusters.values()) {
        await test.sql`select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and application_name like 'chorus:%'`
      }
    },
  },
)
