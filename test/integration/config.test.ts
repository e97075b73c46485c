import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { z } from 'zod'
import type { Cluster } from '../../src/cluster.js'
import { Config } from '../../src/config/config.js'
import { envLayer, envName, merge, secretMatcher } from '../../src/config/keys.js'
import { ConfigStore } from '../../src/config/store.js'
import { withSet } from '../../src/config/edits.js'
import { pushConfigDirectory } from '../../src/cli/config.js'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ConfigOptions } from '../../src/config/options.js'
import type { ClusterEvents } from '../../src/events.js'
import { eventually, member, secret } from '../helpers/cluster.js'
import { SecretBox } from '../../src/config/crypto.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

// The subsystem as cluster.ts wires it: built from `cluster.deps`, started once the instance joined.
async function withConfig<T>(cluster: Cluster, opts: ConfigOptions = {}, env: NodeJS.ProcessEnv = {}): Promise<Config<T>> {
  const config = new Config<T>(cluster.deps, opts, { env })
  await config.start()
  return config
}

const schema = z.object({
  quiz: z.object({ maxPlayers: z.number().int().min(1), title: z.string().default('Quiz') }),
  db: z.object({ password: z.string().min(8) }).optional(),
})

const files = {
  'application.yml': 'quiz:\n  maxPlayers: 10\n',
  'application-prod.yml': 'quiz:\n  maxPlayers: 500\n',
  'quiz.yml': 'quiz:\n  title: Live quiz\n',
  'quiz-prod.json': JSON.stringify({ quiz: { title: 'Live quiz (prod)' } }),
}

describe('shared configuration', () => {
  let db: TestDatabase
  let a: Cluster
  let b: Cluster
  let ca: Config<z.infer<typeof schema>>
  let cb: Config<z.infer<typeof schema>>
  const seen: ClusterEvents['config:changed'][] = []

  beforeAll(async () => {
    db = await testDatabase()
    a = await member(db.url, 'a')
    b = await member(db.url, 'b')
    // An instance whose schema refuses the stored configuration does not start: push the files first.
    const first = await withConfig(a)
    await expect(withConfig(a, { schema, app: 'quiz' })).rejects.toMatchObject({ code: 'CHORUS_ERR_CONFIG_INVALID', details: { key: 'quiz' } })
    expect(await first.push(files, { author: 'cli:test' })).toMatchObject({ version: 1, stored: true })
    await first.close()
    ca = await withConfig(a, { schema, app: 'quiz', secretKeys: ['db.password'] })
    cb = await withConfig(b, { schema, app: 'quiz', profiles: ['prod'] }, { CHORUS_CONFIG_QUIZ_TITLE: 'Overridden here' })
    b.on('config:changed', (e) => void seen.push(e))
  })
  afterAll(async () => {
    await ca?.close()
    await cb?.close()
    await a?.close()
    await b?.close()
    await db?.drop()
  })

  it('pushes files and reads them by precedence: application < profile < app < app-profile < runtime < environment', async () => {
    expect(await ca.push(files)).toMatchObject({ version: 1, stored: false })
    expect(ca.version).toBe(1)
    expect(ca.get('quiz.maxPlayers')).toBe(10)
    expect(ca.get('quiz.title')).toBe('Live quiz')
    await eventually(() => cb.version === 1, 'b runs version 1')
    expect(cb.get('quiz.maxPlayers')).toBe(500)
    // The environment beats every stored source, on that instance only.
    expect(cb.get('quiz.title')).toBe('Overridden here')
    expect(cb.snapshot()).toEqual({ quiz: { maxPlayers: 500, title: 'Overridden here' } })
    expect(Object.isFrozen(cb.snapshot().quiz)).toBe(true)
  })

  it('sets a runtime value above the files, with compare-and-set on the version', async () => {
    const v = await ca.set('quiz.maxPlayers', 42, { expectedVersion: 1 })
    expect(v).toBe(2)
    expect(ca.get('quiz.maxPlayers')).toBe(42)
    await eventually(() => cb.get('quiz.maxPlayers') === 42, 'b sees the runtime value')
    expect(seen.at(-1)).toEqual({ version: 2, changed: ['quiz.maxPlayers'] })
    // A writer that read version 1 loses: nothing changes.
    await expect(cb.set('quiz.maxPlayers', 7, { expectedVersion: 1 })).rejects.toMatchObject({
      code: 'CHORUS_ERR_CONFIG_CONFLICT',
      details: { current: 2, expected: 1 },
    })
    expect(ca.get('quiz.maxPlayers')).toBe(42)
    expect((await ca.history({ limit: 10 })).map((h) => h.version)).toEqual([2, 1])
    // Equal values store nothing.
    expect(await ca.set('quiz.maxPlayers', 42)).toBe(2)
  })

  it('refuses an invalid push or set, naming the key, and changes nothing', async () => {
    const before = await db.sql`select count(*)::int as n from config_versions`
    const bad = { ...files, 'application.yml': 'quiz:\n  maxPlayers: 0\n' }
    // The runtime layer hides maxPlayers; remove it first so the files count.
    await ca.delete('quiz.maxPlayers')
    const version = ca.version
    await expect(ca.push(bad)).rejects.toMatchObject({ code: 'CHORUS_ERR_CONFIG_INVALID', details: { key: 'quiz.maxPlayers' } })
    await expect(cb.set('quiz.maxPlayers', 'many')).rejects.toMatchObject({ code: 'CHORUS_ERR_CONFIG_INVALID', details: { key: 'quiz.maxPlayers' } })
    await expect(ca.set('quiz..x', 1)).rejects.toMatchObject({ code: 'CHORUS_ERR_CONFIG_KEY_INVALID' })
    await expect(ca.push({ 'application.yml': 'quiz: [' })).rejects.toMatchObject({ code: 'CHORUS_ERR_CONFIG_SOURCE_INVALID' })
    const after = await db.sql`select count(*)::int as n from config_versions`
    expect(after[0]!.n).toBe(before[0]!.n + 1) // the delete only
    expect(ca.version).toBe(version)
    expect(ca.get('quiz.maxPlayers')).toBe(10)
  })

  it('refuses what another app registered schema refuses, even from an instance without a schema', async () => {
    const plain = await withConfig(a, {})
    try {
      await expect(plain.set('quiz.maxPlayers', -1)).rejects.toMatchObject({ code: 'CHORUS_ERR_CONFIG_INVALID', details: { key: 'quiz.maxPlayers' } })
    } finally {
      await plain.close()
    }
  })

  it('keeps history and rolls back by writing a new version equal to the old one', async () => {
    const v1 = await ca.set('quiz.title', 'Before')
    const v2 = await ca.set('quiz.title', 'After')
    expect(ca.get('quiz.title')).toBe('After')
    const v3 = await ca.rollback(v1)
    expect(v3).toBe(v2 + 1)
    expect(ca.get('quiz.title')).toBe('Before')
    const [last] = await ca.history({ limit: 1 })
    expect(last).toMatchObject({ version: v3, source: 'rollback', author: 'instance:a', changed: ['quiz.title'] })
    await expect(ca.rollback(9999)).rejects.toMatchObject({ code: 'CHORUS_ERR_CONFIG_VERSION_NOT_FOUND' })
    expect(ca.version).toBe(v3)
  })

  it('encrypts secrets at rest and masks them for display, in clear in process', async () => {
    const clear = 'correct-horse-battery'
    const v = await ca.set('db.password', clear)
    expect(ca.get('db.password')).toBe(clear)
    await eventually(() => cb.version === v, 'b runs the version with the secret')
    expect(cb.get('db.password')).toBe(clear)
    const [row] = await db.sql`select "values"::text as text, "values"->'runtime'->'db.password' as sealed from config_versions where version = ${v}`
    expect(row!.text).not.toContain(clear)
    expect(row!.sealed).toMatchObject({ $secret: expect.stringMatching(/^v1\./) })
    expect(ca.snapshotForDisplay()['db.password']).toBe('••••••')
    // b has no secretKeys option: the key stays secret because the stored version says so.
    expect(cb.snapshotForDisplay()['db.password']).toBe('••••••')
    expect(JSON.stringify(cb.snapshotForDisplay())).not.toContain(clear)
    // Once secret, always secret: a later set without marking it is sealed too.
    const v2 = await cb.set('db.password', 'another-long-one')
    const [row2] = await db.sql`select "values"::text as text from config_versions where version = ${v2}`
    expect(row2!.text).not.toContain('another-long-one')
  })

  it('maps keys to environment variables and secret patterns to keys as documented', () => {
    expect(envName('quiz.maxPlayers')).toBe('CHORUS_CONFIG_QUIZ_MAXPLAYERS')
    expect(envName('db.pool-size')).toBe('CHORUS_CONFIG_DB_POOL_SIZE')
    const env = { CHORUS_CONFIG_A_N: '50', CHORUS_CONFIG_A_S: '50', CHORUS_CONFIG_A_T: 'plain text', CHORUS_CONFIG_OTHER: '1' }
    expect(envLayer({ 'a.n': 1, 'a.s': 'x' }, ['a.t'], env)).toEqual({ 'a.n': 50, 'a.s': '50', 'a.t': 'plain text' })
    const secret = secretMatcher(['**.password', 'api.keys.*'])
    expect(['db.password', 'a.b.password', 'api.keys.stripe'].every(secret)).toBe(true)
    expect(['password', 'db.passwords', 'api.keys.stripe.live', 'api.keys'].some(secret)).toBe(false)
    // A higher layer's key hides the lower layers' ancestors and descendants.
    expect(merge([{ 'quiz.a': 1, 'quiz.b': 2, other: 3 }, { quiz: 'off' }])).toEqual({ other: 3, quiz: 'off' })
  })

  it('finds a version whose notice was lost by its poll', async () => {
    const polled = await withConfig(b, { pollMs: 200 })
    try {
      // A writer that announces nothing (a notice lost on the way looks the same).
      const store = new ConfigStore({ sql: a.db.sql, schema: a.db.schema, box: new SecretBox(secret) })
      const r = await store.write({ author: 'test', source: 'set', next: (cur) => withSet(cur, 'poll.probe', 1, false), validate: () => undefined })
      expect(r.stored).toBe(true)
      await eventually(() => polled.version === r.version, 'the poll finds the version', 5000)
      expect(polled.get('poll.probe')).toBe(1)
    } finally {
      await polled.close()
    }
  })

  it('an instance that cannot run a version keeps its own and reports it refused', async () => {
    // A refinement JSON Schema cannot carry: only this instance knows it.
    // The cluster's own config (wired by createCluster) is the instance's one reporter of what it runs.
    const schema = z.object({ quiz: z.object({ maxPlayers: z.number().refine((n) => n % 2 === 0, 'must be even') }).loose() }).loose()
    const c = await member(db.url, 'c', { config: { schema, app: 'quiz', pollMs: 200 } })
    const strict = c.config
    try {
      const running = strict.version
      const odd = await ca.set('quiz.maxPlayers', 41)
      await eventually(async () => {
        const [row] = await db.sql`select version, refused from config_instances where instance_id = 'c'`
        return row && Number(row.refused) === odd && Number(row.version) === running
      }, 'c reports the version refused')
      expect(strict.version).toBe(running)
      expect(strict.get('quiz.maxPlayers')).not.toBe(41)
      await ca.set('quiz.maxPlayers', 42)
      await eventually(() => strict.get('quiz.maxPlayers') === 42, 'the next valid version runs')
    } finally {
      await c.close()
    }
  })

  it('pushes a directory as chorus up --config-dir does', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'chorus-config-dir-'))
    try {
      await writeFile(join(dir, 'application.yml'), 'quiz:\n  maxPlayers: 12\n')
      await writeFile(join(dir, 'quiz.json'), JSON.stringify({ quiz: { title: 'From the directory' } }))
      await writeFile(join(dir, 'README.md'), 'not configuration')
      await ca.delete('quiz')
      const r = await pushConfigDirectory({ databaseUrl: db.url, schema: 'chorus', secret: 'integration-test-secret-0123', dir, author: 'up' })
      expect(r.stored).toBe(true)
      await eventually(() => ca.version === r.version, 'a runs the pushed directory')
      expect(ca.get('quiz')).toEqual({ maxPlayers: 12, title: 'From the directory' })
      const [last] = await ca.history({ limit: 1 })
      expect(last).toMatchObject({ author: 'up', source: 'push' })
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
