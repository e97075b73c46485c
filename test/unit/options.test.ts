import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import { ChorusError } from '../../src/errors.js'
import { resolveOptions, type ClusterOptions } from '../../src/options.js'

const secret = 'a-secret-of-sixteen+'

/** Resolves and returns the error, failing the test when there is none. */
function refusal(input: unknown, env: NodeJS.ProcessEnv = {}): ChorusError {
  try {
    resolveOptions(input as ClusterOptions, env)
  } catch (err) {
    expect(err).toBeInstanceOf(ChorusError)
    return err as ChorusError
  }
  throw new Error(`options were accepted: ${JSON.stringify(input)} env ${JSON.stringify(env)}`)
}

function expectRefused(input: unknown, option: string, env: NodeJS.ProcessEnv = {}): ChorusError {
  const err = refusal(input, env)
  expect(err.code).toBe('CHORUS_ERR_OPTIONS_INVALID')
  expect(err.details.option).toBe(option)
  expect(err.message).toContain(`"${option}"`)
  return err
}

describe('options', () => {
  describe('bad options are refused with an error naming the option', () => {
    const cases: [string, unknown, string][] = [
      ['a database URL that is not postgres://', { databaseUrl: 'mysql://localhost/db' }, 'databaseUrl'],
      ['an empty instance id', { instanceId: '' }, 'instanceId'],
      ['an instance id with spaces', { instanceId: 'my instance' }, 'instanceId'],
      ['an instance id over 128 characters', { instanceId: 'x'.repeat(129) }, 'instanceId'],
      ['an advertise URL that is not absolute', { advertiseUrl: 'localhost:8080' }, 'advertiseUrl'],
      ['an advertise URL that is not http(s)', { advertiseUrl: 'ftp://host/' }, 'advertiseUrl'],
      ['roles given as a string', { roles: 'scheduling' }, 'roles'],
      ['a role with a space', { roles: ['ok', 'not ok'] }, 'roles.1'],
      ['metadata given as an array', { metadata: [] }, 'metadata'],
      ['metadata over 8 KiB of JSON', { metadata: { blob: 'x'.repeat(9000) } }, 'metadata'],
      ['a secret shorter than 16 characters', { secret: 'short' }, 'secret'],
      ['an unknown preset', { preset: 'wan' }, 'preset'],
      ['an upper-case schema', { schema: 'Chorus' }, 'schema'],
      ['migrate given as a string', { migrate: 'yes' }, 'migrate'],
      ['a heartbeat below 50 ms', { heartbeatMs: 10 }, 'heartbeatMs'],
      ['a fractional heartbeat', { heartbeatMs: 500.5 }, 'heartbeatMs'],
      ['a negative failAfter', { failAfterMs: -1 }, 'failAfterMs'],
      ['failAfter shorter than two heartbeats', { heartbeatMs: 1000, failAfterMs: 1500 }, 'failAfterMs'],
      ['a fence margin leaving no heartbeat', { heartbeatMs: 500, failAfterMs: 2500, fenceMarginMs: 2000 }, 'fenceMarginMs'],
      ['a burst ratio of 0', { burstRatio: 0 }, 'burstRatio'],
      ['a burst ratio above 1', { burstRatio: 1.5 }, 'burstRatio'],
      ['a pool of 0', { poolSize: 0 }, 'poolSize'],
      ['a pool over 100', { poolSize: 101 }, 'poolSize'],
      ['an embedded port above 65535', { embedded: { port: 70000 } }, 'embedded.port'],
      ['embedded given as a number', { embedded: 5 }, 'embedded'],
      ['a bus payload limit over 64 MiB', { bus: { maxPayloadBytes: 65 * 1024 * 1024 } }, 'bus.maxPayloadBytes'],
      ['a bus queue limit of 0', { bus: { maxQueueBytes: 0 } }, 'bus.maxQueueBytes'],
      ['bus given as a string', { bus: 'fast' }, 'bus'],
      ['a logger that is not a pino logger', { logger: { log() {} } }, 'logger'],
      ['an unknown log level', { logLevel: 'verbose' }, 'logLevel'],
    ]
    for (const [what, input, option] of cases) {
      it(`refuses ${what}`, () => {
        expectRefused({ secret, ...(input as object) }, option)
      })
    }

    it('refuses options that are not an object', () => {
      expectRefused(null, 'options')
      expectRefused('postgres://localhost/db', 'options')
    })
  })

  describe('unknown options are refused, not ignored', () => {
    it('refuses an unknown top-level option', () => {
      const err = expectRefused({ secret, heartbeat: 500 }, 'heartbeat')
      expect(err.message).toContain('not a known option')
    })

    it('refuses a misspelt nested option', () => {
      expectRefused({ secret, bus: { maxPayload: 1024 } }, 'bus.maxPayload')
      expectRefused({ secret, embedded: { dir: '/tmp/pg' } }, 'embedded.dir')
    })
  })

  describe('environment fallbacks', () => {
    it('reads every documented variable when no option is given', () => {
      const o = resolveOptions(
        {},
        {
          DATABASE_URL: 'postgres://u:p@db.example:5432/app',
          CHORUS_INSTANCE_ID: 'node-7',
          CHORUS_ADVERTISE_URL: 'http://10.0.0.7:8081',
          CHORUS_ROLES: 'scheduling, web ,,',
          CHORUS_SECRET: secret,
          CHORUS_PRESET: 'local',
          CHORUS_SCHEMA: 'coord',
          CHORUS_HEARTBEAT_MS: '400',
          CHORUS_FAIL_AFTER_MS: '3000',
          CHORUS_DATA_DIR: '/var/lib/chorus/pg',
          CHORUS_PG_PORT: '5499',
          CHORUS_LOG_LEVEL: 'debug',
        },
      )
      expect(o).toMatchObject({
        databaseUrl: 'postgres://u:p@db.example:5432/app',
        instanceId: 'node-7',
        advertiseUrl: 'http://10.0.0.7:8081',
        roles: ['scheduling', 'web'],
        secret,
        preset: 'local',
        schema: 'coord',
        heartbeatMs: 400,
        failAfterMs: 3000,
        embedded: { dataDir: '/var/lib/chorus/pg', port: 5499 },
        logLevel: 'debug',
      })
    })

    it('derives the advertise URL from PORT', () => {
      expect(resolveOptions({}, { PORT: '8082' }).advertiseUrl).toBe('http://127.0.0.1:8082')
    })

    it('names the variable when a numeric one is not a number', () => {
      const err = expectRefused({}, 'CHORUS_HEARTBEAT_MS', { CHORUS_HEARTBEAT_MS: 'fast' })
      expect(err.message).toContain('fast')
    })

    it('names the option when a variable gives it a bad value', () => {
      expectRefused({}, 'instanceId', { CHORUS_INSTANCE_ID: 'has space' })
      expectRefused({}, 'preset', { CHORUS_PRESET: 'wan', CHORUS_SECRET: secret })
    })

    it('treats an empty variable as unset', () => {
      const o = resolveOptions({}, { CHORUS_INSTANCE_ID: '', CHORUS_HEARTBEAT_MS: '' })
      expect(o.instanceId).not.toBe('')
      expect(o.heartbeatMs).toBe(500)
    })
  })

  describe('precedence: explicit beats environment beats preset beats default', () => {
    const env = { CHORUS_HEARTBEAT_MS: '600', CHORUS_INSTANCE_ID: 'from-env', CHORUS_SCHEMA: 'env_schema', CHORUS_PRESET: 'lan', CHORUS_SECRET: secret }

    it('takes an explicit option over the environment', () => {
      const o = resolveOptions({ heartbeatMs: 700, instanceId: 'explicit', schema: 'explicit_schema', preset: 'local' }, env)
      expect(o).toMatchObject({ heartbeatMs: 700, instanceId: 'explicit', schema: 'explicit_schema', preset: 'local' })
    })

    it('takes the environment over the preset', () => {
      const o = resolveOptions({}, env)
      expect(o.preset).toBe('lan')
      expect(o.heartbeatMs).toBe(600) // the lan preset says 1000
      expect(o.failAfterMs).toBe(5000) // not in env: the preset's
    })

    it('takes the preset over the default', () => {
      const local = resolveOptions({ preset: 'local' }, {})
      const lan = resolveOptions({ preset: 'lan', secret }, {})
      expect([local.heartbeatMs, local.failAfterMs, local.fenceMarginMs]).toEqual([500, 2500, 700])
      expect([lan.heartbeatMs, lan.failAfterMs, lan.fenceMarginMs]).toEqual([1000, 5000, 1500])
    })

    it('falls back to the defaults', () => {
      const o = resolveOptions({}, {})
      expect(o).toMatchObject({
        databaseUrl: null,
        advertiseUrl: null,
        roles: [],
        metadata: {},
        preset: 'local',
        schema: 'chorus',
        migrate: true,
        burstRatio: 0.5,
        poolSize: 10,
        embedded: { port: 0 },
        bus: { maxPayloadBytes: 1024 * 1024, maxQueueBytes: 16 * 1024 * 1024, payloadRetentionMs: 60_000 },
        logger: null,
        logLevel: 'info',
      })
      expect(o.instanceId).toMatch(new RegExp(`-${process.pid}$`))
      expect(o.embedded.dataDir).toMatch(/\.chorus\/postgres$/)
    })

    it('chooses preset local for the embedded database and lan for a given URL', () => {
      expect(resolveOptions({}, {}).preset).toBe('local')
      expect(resolveOptions({ databaseUrl: 'postgres://h/db', secret }, {}).preset).toBe('lan')
    })
  })

  describe('the secret', () => {
    it('is required for preset lan, and the error says how to give it', () => {
      const err = expectRefused({ preset: 'lan' }, 'secret')
      expect(err.message).toContain('CHORUS_SECRET')
      expectRefused({ databaseUrl: 'postgres://h/db' }, 'secret')
    })

    it('is generated for preset local, different each time', () => {
      const a = resolveOptions({ preset: 'local' }, {}).secret
      const b = resolveOptions({ preset: 'local' }, {}).secret
      expect(a.length).toBeGreaterThanOrEqual(16)
      expect(a).not.toBe(b)
    })

    it('comes from CHORUS_SECRET for preset lan', () => {
      expect(resolveOptions({ preset: 'lan' }, { CHORUS_SECRET: secret }).secret).toBe(secret)
    })
  })

  describe('the result', () => {
    it('is frozen, nested groups included', () => {
      const o = resolveOptions({ roles: ['web'], metadata: { zone: 'a' } }, {})
      expect(Object.isFrozen(o)).toBe(true)
      expect(Object.isFrozen(o.roles)).toBe(true)
      expect(Object.isFrozen(o.metadata)).toBe(true)
      expect(Object.isFrozen(o.embedded)).toBe(true)
      expect(Object.isFrozen(o.bus)).toBe(true)
      expect(() => {
        ;(o as { heartbeatMs: number }).heartbeatMs = 1
      }).toThrow(TypeError)
      expect(() => (o.roles as string[]).push('x')).toThrow(TypeError)
    })

    it('leaves the caller’s own objects unfrozen', () => {
      const metadata = { zone: { name: 'a' } }
      const roles = ['web']
      const embedded = { port: 5499 }
      resolveOptions({ metadata, roles, embedded }, {})
      expect(Object.isFrozen(metadata)).toBe(false)
      expect(Object.isFrozen(metadata.zone)).toBe(false)
      expect(Object.isFrozen(roles)).toBe(false)
      expect(Object.isFrozen(embedded)).toBe(false)
    })

    it('keeps a given pino logger usable (not frozen)', () => {
      const logger = pino({ level: 'silent' })
      const o = resolveOptions({ logger }, {})
      expect(o.logger).toBe(logger)
      expect(Object.isFrozen(logger)).toBe(false)
      expect(() => logger.child({ a: 1 })).not.toThrow()
    })
  })
})
