import { describe, expect, it } from 'vitest'
import { isChorusError } from '../../src/errors.js'
import { NAME_SPACE, PATH_SPACE, nameResource, pathResource, related } from '../../src/locks/paths.js'

describe('lock names and paths', () => {
  it('covers a path with its ancestors first and the path itself last', () => {
    expect(pathResource('a/b/c')).toEqual({ space: PATH_SPACE, keys: ['a', 'a/b', 'a/b/c'], target: 'a/b/c' })
    expect(pathResource('only')).toEqual({ space: PATH_SPACE, keys: ['only'], target: 'only' })
    expect(nameResource('a/b')).toEqual({ space: NAME_SPACE, keys: ['a/b'], target: 'a/b' })
  })

  it('accepts any name of 1 to 512 bytes without NUL', () => {
    for (const name of ['x', '/leading', 'a//b', '..', ' ', 'é'.repeat(256), 'x'.repeat(512)]) expect(nameResource(name).target).toBe(name)
    for (const name of ['', 'a\u0000', 'é'.repeat(257), 'x'.repeat(513)]) {
      expect(() => nameResource(name)).toThrow(expect.objectContaining({ code: 'CHORUS_ERR_LOCK_NAME_INVALID' }))
    }
  })

  it('refuses empty, absolute, trailing-slash, dot and over-long paths with the reason', () => {
    const cases: [string, RegExp][] = [
      ['', /empty/],
      ['/a', /relative/],
      ['a/', /end with/],
      ['a//b', /empty segment/],
      ['.', /"\." segment/],
      ['a/../b', /"\.\." segment/],
      ['a\u0000b', /NUL/],
      ['x'.repeat(1025), /bytes/],
      [Array(65).fill('s').join('/'), /segments/],
    ]
    for (const [path, why] of cases) {
      let err: unknown
      try {
        pathResource(path)
      } catch (e) {
        err = e
      }
      expect(isChorusError(err, 'CHORUS_ERR_LOCK_PATH_INVALID'), JSON.stringify(path.slice(0, 10))).toBe(true)
      expect((err as Error).message).toMatch(why)
    }
  })

  it('wakes a waiter only for releases on the same name, an ancestor or a descendant', () => {
    expect(related(PATH_SPACE, 'a/b', 'a/b')).toBe(true)
    expect(related(PATH_SPACE, 'a', 'a/b')).toBe(true)
    expect(related(PATH_SPACE, 'a/b/c', 'a/b')).toBe(true)
    expect(related(PATH_SPACE, 'a/c', 'a/b')).toBe(false)
    expect(related(PATH_SPACE, 'a/bc', 'a/b')).toBe(false)
    expect(related(NAME_SPACE, 'a', 'a/b')).toBe(false)
    expect(related(NAME_SPACE, 'a/b', 'a/b')).toBe(true)
  })
})
