import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { ChorusError, catalog, toError } from '../../src/errors.js'

const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8')
const documented = new Map(
  [...doc.matchAll(/^\| `(CHORUS_ERR_[A-Z_]+)` \| ([^|]+) \|/gm)].map((m) => [m[1]!, m[2]!.trim()]),
)

describe('the error catalog', () => {
  it('lists exactly the codes docs/errors.md documents', () => {
    expect([...documented.keys()].sort()).toEqual(Object.keys(catalog).sort())
  })

  it('documents the HTTP status each code carries', () => {
    for (const [code, entry] of Object.entries(catalog)) {
      const status = 'status' in entry ? String(entry.status) : '—'
      expect(documented.get(code), code).toBe(status)
    }
  })

  it('names codes CHORUS_ERR_<AREA>_<PROBLEM>', () => {
    for (const code of Object.keys(catalog)) expect(code).toMatch(/^CHORUS_ERR_[A-Z]+_[A-Z_]+$/)
  })

  it('fills message placeholders and keeps the cause', () => {
    const cause = new Error('boom')
    const err = new ChorusError('CHORUS_ERR_OPTIONS_INVALID', ['heartbeatMs', 'must be positive'], { cause })
    expect(err.message).toBe('invalid option "heartbeatMs": must be positive')
    expect(err.code).toBe('CHORUS_ERR_OPTIONS_INVALID')
    expect(err.cause).toBe(cause)
    expect(err).toBeInstanceOf(Error)
  })

  it('wraps thrown non-errors, keeping the original as cause', () => {
    const wrapped = toError({ weird: true })
    expect(wrapped).toBeInstanceOf(Error)
    expect(wrapped.cause).toEqual({ weird: true })
    expect(toError('text').message).toBe('text')
  })
})
