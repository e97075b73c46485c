import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import { decodeFrame, encodeFrame, frameBytes } from '../../src/bus/frame.js'
import { MemoryTransport } from '../../src/bus/memory.js'
import { NatsTransport } from '../../src/bus/nats.js'
import { RedisTransport } from '../../src/bus/redis.js'
import { busKind, createTransport, isTransport } from '../../src/bus/select.js'
import type { Db } from '../../src/db/connect.js'
import { ChorusError } from '../../src/errors.js'

const log = pino({ level: 'silent' })

function thrown(fn: () => unknown): ChorusError {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(ChorusError)
    return err as ChorusError
  }
  throw new Error('nothing was thrown')
}

describe('choosing the bus transport', () => {
  it('names the transport from the URL scheme, PostgreSQL when there is none', () => {
    expect(busKind(undefined)).toBe('postgres')
    expect(busKind('')).toBe('postgres')
    expect(busKind('postgres:')).toBe('postgres')
    expect(busKind('postgresql://db.internal/app')).toBe('postgres')
    expect(busKind('redis://cache:6379')).toBe('redis')
    expect(busKind('REDISS://cache:6380')).toBe('redis')
    expect(busKind('nats://a:4222,nats://b:4222')).toBe('nats')
    expect(busKind('memory:')).toBe('memory')
  })

  it('refuses an unknown scheme or a string that is not a URL, without showing the password', () => {
    const err = thrown(() => busKind('kafka://user:s3cret@broker:9092'))
    expect(err.code).toBe('CHORUS_ERR_BUS_URL_INVALID')
    expect(err.message).toContain('no transport for "kafka:"')
    expect(err.message).not.toContain('s3cret')
    expect(err.details.url).toBe('kafka://user:***@broker:9092')
    expect(thrown(() => busKind('localhost:6379/extra')).code).toBe('CHORUS_ERR_BUS_URL_INVALID')
    expect(thrown(() => busKind('just words')).message).toContain('it is not a URL')
    expect(thrown(() => createTransport({ url: 'amqp://mq' }, { log })).code).toBe('CHORUS_ERR_BUS_URL_INVALID')
  })

  it('builds each transport without connecting, and takes a transport object as it is', () => {
    const db = { schema: 'shop' } as unknown as Db
    // PostgreSQL's transport needs a live database: test/integration/bus.contract.postgres.test.ts builds it.
    expect(createTransport({ url: 'redis://127.0.0.1:1' }, { db, log })).toBeInstanceOf(RedisTransport)
    expect(createTransport({ url: 'nats://127.0.0.1:1' }, { db, log })).toBeInstanceOf(NatsTransport)
    const own = new MemoryTransport()
    expect(createTransport(own, { log })).toBe(own)
    expect(isTransport(own)).toBe(true)
    expect(isTransport({ url: 'redis://x' })).toBe(false)
  })

  it('refuses a PostgreSQL bus without a database, a bad sharded setting and a host-less URL', () => {
    expect(thrown(() => createTransport({ url: 'postgres:' }, { log })).message).toContain("cluster's database")
    expect(thrown(() => createTransport({ url: 'redis://cache?sharded=maybe' }, { log })).message).toContain('sharded=maybe')
    expect(thrown(() => createTransport({ url: 'nats://' }, { log })).code).toBe('CHORUS_ERR_BUS_URL_INVALID')
  })

  it('refuses a cluster prefix that is not one plain name', () => {
    for (const prefix of ['', 'a.b', 'a b', 'x'.repeat(101), '*', '>']) {
      const err = thrown(() => createTransport({ url: 'nats://127.0.0.1:1' }, { log, prefix }))
      expect(err.code, prefix).toBe('CHORUS_ERR_OPTIONS_INVALID')
    }
  })

  it('reports a server it cannot reach at start as CHORUS_ERR_BUS_CONNECT, naming it without its password', async () => {
    for (const url of ['redis://:pw@127.0.0.1:1', 'nats://user:pw@127.0.0.1:1']) {
      const t = createTransport({ url }, { log, prefix: 'x' })
      const err = await t.start({ deliver: () => undefined, reconnected: () => undefined, disconnected: () => undefined, lost: () => undefined }).then(
        () => null,
        (e: unknown) => e,
      )
      expect(err, url).toBeInstanceOf(ChorusError)
      expect((err as ChorusError).code).toBe('CHORUS_ERR_BUS_CONNECT')
      expect((err as ChorusError).message).toContain('127.0.0.1:1')
      expect((err as ChorusError).message).not.toContain('pw')
      await t.close()
    }
  })
})

describe('the bus frame', () => {
  it('carries any data unaltered and measures itself exactly', () => {
    for (const data of ['', 'plain', 'new\nlines\n\n', '1\nfake\n2\nheader\n', 'é€😀|\u0000\u0001']) {
      const e = { publisher: 'host-1/AbC_d-9', seq: 123456789, channel: 'chorus.cache.a:b/c@d*', data }
      const frame = encodeFrame(e)
      expect(frame.length).toBe(frameBytes(e))
      expect(decodeFrame(frame)).toEqual(e)
      expect(decodeFrame(new Uint8Array(frame))).toEqual(e)
    }
  })

  it('refuses what is not a frame', () => {
    for (const bad of ['', '1\np\n1\nc', '2\np\n1\nc\nd', '1\n\n1\nc\nd', '1\np\nx\nc\nd', '1\np\n0\nc\nd']) {
      expect(() => decodeFrame(Buffer.from(bad)), JSON.stringify(bad)).toThrow()
    }
  })
})
