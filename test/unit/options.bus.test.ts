// The bus's options: `bus.url` / CHORUS_BUS_URL choose the transport, `transport` hands one in.
import { describe, expect, it } from 'vitest'
import { MemoryHub, MemoryTransport } from '../../src/bus/memory.js'
import { isChorusError } from '../../src/errors.js'
import { resolveOptions } from '../../src/options.js'

const base = { secret: 'a-secret-of-sixteen+', databaseUrl: 'postgres://localhost/db' }

function refused(input: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): Error {
  try {
    resolveOptions(input as never, env)
  } catch (err) {
    return err as Error
  }
  throw new Error('accepted')
}

describe('bus options', () => {
  it('takes bus.url from the option, else from CHORUS_BUS_URL, else none (PostgreSQL)', () => {
    expect(resolveOptions(base, {}).bus.url).toBeNull()
    expect(resolveOptions(base, { CHORUS_BUS_URL: 'nats://127.0.0.1:4222' }).bus.url).toBe('nats://127.0.0.1:4222')
    expect(resolveOptions({ ...base, bus: { url: 'redis://127.0.0.1:6379' } }, { CHORUS_BUS_URL: 'nats://x' }).bus.url).toBe('redis://127.0.0.1:6379')
  })

  it('refuses a bus URL no transport serves, naming the option', () => {
    for (const [input, env, option] of [
      [{ ...base, bus: { url: 'kafka://broker:9092' } }, {}, 'bus.url'],
      [base, { CHORUS_BUS_URL: 'not a url' }, 'bus.url'],
    ] as const) {
      const err = refused(input, env)
      expect(isChorusError(err, 'CHORUS_ERR_OPTIONS_INVALID')).toBe(true)
      expect((err as { details: { option: string } }).details.option).toBe(option)
    }
  })

  it('accepts a transport object and refuses anything else in its place', () => {
    const t = new MemoryTransport(new MemoryHub())
    expect(resolveOptions({ ...base, transport: t }, {}).transport).toBe(t)
    const err = refused({ ...base, transport: { send() {} } })
    expect((err as { details: { option: string } }).details.option).toBe('transport')
  })

  it('refuses unknown keys inside bus, by their full name', () => {
    const err = refused({ ...base, bus: { urll: 'redis://x' } })
    expect(err.message).toBe('invalid option "bus.urll": is not a known option')
  })
})
