import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import { Events } from '../../src/events.js'

/** A real pino logger writing its JSON lines into an array. */
function capturedLogger() {
  const lines: { level: number; msg: string; event?: string; err?: { message: string } }[] = []
  const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s)) })
  return { log, lines }
}

const gap = { reason: 'reconnect' as const }

describe('events', () => {
  it('calls listeners in registration order with the payload', () => {
    const { log } = capturedLogger()
    const events = new Events(log)
    const calls: string[] = []
    events.on('bus:gap', (p) => void calls.push(`a:${p.reason}`))
    events.on('bus:gap', (p) => void calls.push(`b:${p.reason}`))
    events.emit('bus:gap', gap)
    expect(calls).toEqual(['a:reconnect', 'b:reconnect'])
  })

  it('keeps calling the other listeners when one throws, and the emitter does not throw', () => {
    const { log, lines } = capturedLogger()
    const events = new Events(log)
    const calls: string[] = []
    events.on('bus:gap', () => void calls.push('first'))
    events.on('bus:gap', () => {
      throw new Error('listener bug')
    })
    events.on('bus:gap', () => void calls.push('third'))
    expect(() => events.emit('bus:gap', gap)).not.toThrow()
    expect(calls).toEqual(['first', 'third'])
    expect(lines).toHaveLength(1)
    expect(lines[0]!.event).toBe('bus:gap')
    expect(lines[0]!.err?.message).toBe('listener bug')
    // The failing listener stays registered and the emitter keeps working.
    events.emit('bus:gap', gap)
    expect(calls).toEqual(['first', 'third', 'first', 'third'])
  })

  it('survives a listener that throws something that is not an Error', () => {
    const { log, lines } = capturedLogger()
    const events = new Events(log)
    let after = 0
    events.on('bus:gap', () => {
      throw 'a string' // eslint-disable-line no-throw-literal
    })
    events.on('bus:gap', () => void after++)
    events.emit('bus:gap', gap)
    expect(after).toBe(1)
    expect(lines[0]!.err?.message).toBe('a string')
  })

  it('logs a rejecting async listener without an unhandled rejection, and still calls the others', async () => {
    const { log, lines } = capturedLogger()
    const events = new Events(log)
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => void unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      let after = 0
      events.on('bus:gap', async () => {
        await new Promise((r) => setTimeout(r, 5))
        throw new Error('async listener bug')
      })
      events.on('bus:gap', () => void after++)
      events.emit('bus:gap', gap)
      expect(after).toBe(1)
      await new Promise((r) => setTimeout(r, 50))
      expect(unhandled).toEqual([])
      expect(lines.map((l) => l.err?.message)).toEqual(['async listener bug'])
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })

  it('survives a listener that returns a thenable whose then throws', () => {
    const { log, lines } = capturedLogger()
    const events = new Events(log)
    let after = 0
    events.on('bus:gap', (() => ({
      then() {
        throw new Error('bad thenable')
      },
    })) as never)
    events.on('bus:gap', () => void after++)
    events.emit('bus:gap', gap)
    expect(after).toBe(1)
    expect(lines).toHaveLength(1)
  })

  it('calls a once listener only once, even when it throws', () => {
    const { log } = capturedLogger()
    const events = new Events(log)
    let calls = 0
    events.once('bus:gap', () => {
      calls++
      throw new Error('once')
    })
    events.emit('bus:gap', gap)
    events.emit('bus:gap', gap)
    expect(calls).toBe(1)
    expect(events.listenerCount('bus:gap')).toBe(0)
  })

  it('stops calling a listener after its off function is called, even during an emit', () => {
    const { log } = capturedLogger()
    const events = new Events(log)
    const calls: string[] = []
    let offB: () => void = () => undefined
    events.on('bus:gap', () => {
      calls.push('a')
      offB()
    })
    offB = events.on('bus:gap', () => void calls.push('b'))
    events.emit('bus:gap', gap) // b was registered when the emit began: still called this once
    events.emit('bus:gap', gap)
    expect(calls).toEqual(['a', 'b', 'a'])
  })

  it('resolves next() with the next payload and rejects it when the signal aborts', async () => {
    const { log } = capturedLogger()
    const events = new Events(log)
    const next = events.next('bus:gap')
    events.emit('bus:gap', { reason: 'sequence', missed: 2 })
    await expect(next).resolves.toEqual({ reason: 'sequence', missed: 2 })

    const controller = new AbortController()
    const waiting = events.next('bus:gap', controller.signal)
    controller.abort(new Error('gave up'))
    await expect(waiting).rejects.toThrow('gave up')
    expect(events.listenerCount('bus:gap')).toBe(0)
  })

  it('rejects next() at once when the signal is already aborted', async () => {
    const { log } = capturedLogger()
    const events = new Events(log)
    const outcome = await Promise.race([
      events.next('bus:gap', AbortSignal.abort(new Error('already'))).then(
        () => 'resolved',
        (err: Error) => err.message,
      ),
      new Promise((r) => setTimeout(() => r('still pending'), 100)),
    ])
    expect(outcome).toBe('already')
    expect(events.listenerCount('bus:gap')).toBe(0)
  })
})
