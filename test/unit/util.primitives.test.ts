import { describe, expect, it } from 'vitest'
import { isChorusError } from '../../src/errors.js'
import { LinkedSignal, untilAborted } from '../../src/util/abort.js'
import { defer } from '../../src/util/deferred.js'
import { Machine } from '../../src/util/machine.js'
import { Rerun } from '../../src/util/rerun.js'

describe('Machine', () => {
  const enteredFrom = { a: [], b: ['a'], c: ['a', 'b'] } as const

  it('moves along declared edges and reports each change', () => {
    const seen: string[] = []
    const m = new Machine<'a' | 'b' | 'c'>('test', enteredFrom, 'a', (from, to) => seen.push(`${from}>${to}`))
    m.to('b')
    m.to('b')
    m.to('c')
    expect(m.state).toBe('c')
    expect(seen).toEqual(['a>b', 'b>c'])
  })

  it('throws a typed error on an undeclared edge and stays where it was', () => {
    const m = new Machine<'a' | 'b' | 'c'>('test', enteredFrom, 'c')
    expect(m.can('a')).toBe(false)
    try {
      m.to('a')
      expect.unreachable()
    } catch (err) {
      expect(isChorusError(err, 'CHORUS_ERR_INTERNAL_TRANSITION')).toBe(true)
      expect((err as Error).message).toBe('test cannot go from "c" to "a"')
    }
    expect(m.state).toBe('c')
  })
})

describe('untilAborted', () => {
  it('settles with the promise when the signal stays quiet, and leaves no listener behind', async () => {
    const c = new AbortController()
    let listeners = 0
    const add = c.signal.addEventListener.bind(c.signal)
    const remove = c.signal.removeEventListener.bind(c.signal)
    c.signal.addEventListener = ((...a: Parameters<typeof add>) => (listeners++, add(...a))) as typeof add
    c.signal.removeEventListener = ((...a: Parameters<typeof remove>) => (listeners--, remove(...a))) as typeof remove
    await expect(untilAborted(Promise.resolve(7), c.signal)).resolves.toBe(7)
    await expect(untilAborted(Promise.reject(new Error('x')), c.signal)).rejects.toThrow('x')
    expect(listeners).toBe(0)
  })

  it('rejects with the reason as soon as the signal aborts', async () => {
    const c = new AbortController()
    const never = defer<number>()
    const p = untilAborted(never.promise, c.signal)
    c.abort(new Error('stop'))
    await expect(p).rejects.toThrow('stop')
    await expect(untilAborted(Promise.resolve(1), c.signal)).rejects.toThrow('stop')
  })
})

describe('LinkedSignal', () => {
  it('aborts with the first source reason and detaches on dispose', () => {
    const a = new AbortController()
    const b = new AbortController()
    const linked = new LinkedSignal([a.signal, undefined, b.signal])
    b.abort('b went')
    expect(linked.signal.aborted).toBe(true)
    expect(linked.signal.reason).toBe('b went')
    const other = new LinkedSignal([a.signal])
    other.dispose()
    a.abort('late')
    expect(other.aborted).toBe(false)
  })
})

describe('Rerun', () => {
  it('runs once more after the current run however often it is asked meanwhile', async () => {
    let runs = 0
    const gate = defer()
    const r = new Rerun(async () => {
      runs++
      if (runs === 1) await gate.promise
    }, () => undefined)
    const first = r.run()
    const asked = [r.run(), r.run(), r.run()]
    expect(r.running).toBe(true)
    gate.resolve()
    await Promise.all([first, ...asked])
    expect(runs).toBe(2)
    expect(r.running).toBe(false)
  })

  it('hands a failing run to onError and keeps working', async () => {
    const errors: unknown[] = []
    let fail = true
    const r = new Rerun(async () => {
      if (fail) throw new Error('boom')
    }, (e) => errors.push(e))
    await r.run()
    fail = false
    await r.run()
    expect(errors).toHaveLength(1)
  })
})
