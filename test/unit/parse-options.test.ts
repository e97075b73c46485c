import { describe, expect, it } from 'vitest'
import { z } from 'zod'
import { ChorusError } from '../../src/errors.js'
import { parseOptions } from '../../src/util/parse-options.js'

const schema = z.strictObject({ ttlMs: z.number().int().positive().optional(), mode: z.enum(['a', 'b']).default('a') })

describe('parseOptions', () => {
  it('gives no options the schema’s defaults, the same frozen result every time', () => {
    const first = parseOptions(schema, {})
    expect(first).toEqual({ mode: 'a' })
    expect(parseOptions(schema, undefined)).toBe(first)
    expect(parseOptions(schema, {})).toBe(first)
    expect(Object.isFrozen(first)).toBe(true)
  })

  it('still parses and refuses given options after no options were seen', () => {
    parseOptions(schema, {})
    expect(parseOptions(schema, { ttlMs: 5 })).toEqual({ ttlMs: 5, mode: 'a' })
    expect(() => parseOptions(schema, { ttlMs: -1 })).toThrow(ChorusError)
    expect(() => parseOptions(schema, { tllMs: 5 })).toThrow(/tllMs.*is not a known option/)
  })

  it('does not take an object with only inherited or symbol keys for no options', () => {
    const withSymbol = { [Symbol('x')]: 1 }
    expect(parseOptions(schema, withSymbol)).toEqual({ mode: 'a' })
    expect(parseOptions(schema, withSymbol)).not.toBe(parseOptions(schema, {}))
    class Opts {
      ttlMs = 3
    }
    expect(parseOptions(z.any(), new Opts())).toEqual({ ttlMs: 3 })
  })
})
