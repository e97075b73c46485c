// cluster.config as users reach it: wired by createCluster before the other subsystems, validated
// by the schema given at createCluster, with bad config options refused naming the option.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { z } from 'zod'
import type { Cluster } from '../../src/cluster.js'
import { isChorusError } from '../../src/errors.js'
import { eventually, member } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

describe('cluster.config through createCluster', () => {
  let db: TestDatabase
  let a: Cluster
  let b: Cluster
  const schema = z.object({ quiz: z.object({ defaultDurationSec: z.number().int().positive() }).partial() }).partial()
  beforeAll(async () => {
    db = await testDatabase()
    a = await member(db.url, 'cfg-a', { config: { schema } })
    b = await member(db.url, 'cfg-b', { config: { schema } })
  })
  afterAll(async () => {
    await a?.close()
    await b?.close()
    await db?.drop()
  })

  it('sets on one instance and reads on the other', async () => {
    const version = await a.config.set('quiz.defaultDurationSec', 90)
    await eventually(() => b.config.version >= version, 'the new version on b')
    expect(b.config.get('quiz.defaultDurationSec')).toBe(90)
  })

  it("refuses a value the schema refuses, and nothing changes", async () => {
    const before = a.config.version
    const err = await a.config.set('quiz.defaultDurationSec', -5).catch((e: unknown) => e)
    expect(isChorusError(err, 'CHORUS_ERR_CONFIG_INVALID')).toBe(true)
    expect(a.config.version).toBe(before)
    expect(a.config.get('quiz.defaultDurationSec')).toBe(90)
  })

  it('refuses unknown config options at createCluster, naming the option', async () => {
    const err = await member(db.url, 'cfg-c', { config: { profile: ['dev'] } as never }).catch((e: unknown) => e)
    expect(isChorusError(err)).toBe(true)
    expect((err as Error).message).toContain('config.profile')
  })
})
