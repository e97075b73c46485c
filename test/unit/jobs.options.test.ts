import { describe, expect, it } from 'vitest'
import { ChorusError } from '../../src/errors.js'
import { checkDefineOptions, checkEnqueueOptions, cronOptions, enqueueManyItem, checkOptions, singletonOptions } from '../../src/jobs/options.js'

/** The code and the option an error names, or null when nothing was thrown. */
function refusal(fn: () => unknown): { code: string; option: unknown; message: string } | null {
  try {
    fn()
    return null
  } catch (err) {
    expect(err).toBeInstanceOf(ChorusError)
    const e = err as ChorusError
    return { code: e.code, option: (e.details as { option?: unknown } | undefined)?.option, message: e.message }
  }
}

describe('job option schemas', () => {
  it('apply the defaults of define, and keep a backoff function as given', () => {
    const backoff = () => 7
    const d = checkDefineOptions({ backoff })
    expect([d.concurrency, d.timeoutMs, d.retries, d.transactional, d.roles]).toEqual([5, 300_000, 3, false, []])
    expect(d.backoff).toBe(backoff)
    expect(checkDefineOptions(undefined, { retries: 0 }).retries).toBe(0)
    expect(checkDefineOptions({ backoff: { delayMs: 100, jitter: 0 } }).backoff(3, new Error('x'))).toBe(400)
  })

  it('refuse bad define options with a typed error naming the option', () => {
    expect(refusal(() => checkDefineOptions({ concurrency: 0 }))).toEqual({
      code: 'CHORUS_ERR_JOB_OPTIONS_INVALID',
      option: 'concurrency',
      message: 'invalid job option "concurrency": must be an integer from 1 to 1000',
    })
    expect(refusal(() => checkDefineOptions({ retries: -1 }))?.option).toBe('retries')
    expect(refusal(() => checkDefineOptions({ backoff: { jitter: 2 } }))?.message).toBe('invalid job option "backoff.jitter": must be at most 1')
    expect(refusal(() => checkDefineOptions({ backoff: 'fast' as never }))?.message).toBe('invalid job option "backoff": must be an object or a function')
    expect(refusal(() => checkDefineOptions({ roles: [''] }))?.message).toBe('invalid job option "roles": must be an array of non-empty strings')
    expect(refusal(() => checkDefineOptions({ concurency: 2 } as never))?.message).toBe('invalid job option "concurency": is not a known option')
    expect(refusal(() => checkDefineOptions({ backoff: { delay: 1 } } as never))?.option).toBe('backoff.delay')
  })

  it('check enqueue options and items, with their own code for a negative delay', () => {
    expect(checkEnqueueOptions({ key: 'k', priority: 2, delayMs: 5 })).toEqual({ atMs: -1, delayMs: 5, key: 'k', priority: 2 })
    expect(checkEnqueueOptions({ runAt: new Date(1000) }).atMs).toBe(1000)
    expect(refusal(() => checkEnqueueOptions({ delayMs: -1 }))?.code).toBe('CHORUS_ERR_JOB_DELAY_INVALID')
    expect(refusal(() => checkEnqueueOptions({ delayMs: Number.NaN }))?.option).toBe('delayMs')
    expect(refusal(() => checkEnqueueOptions({ runAt: new Date('nope') }))?.message).toBe('invalid job option "runAt": must be a valid Date')
    expect(refusal(() => checkEnqueueOptions({ runAt: new Date(), delayMs: 5 }))?.option).toBe('runAt')
    expect(refusal(() => checkEnqueueOptions(null as never))?.message).toBe('invalid job option "options": must be an object')
    expect(checkEnqueueOptions({ name: 'n', payload: 1, key: 'k' } as never, enqueueManyItem).key).toBe('k')
    expect(refusal(() => checkEnqueueOptions({ name: 'n' } as never))?.option).toBe('name')
  })

  it('check cron and singleton options with their areas codes', () => {
    expect(refusal(() => checkOptions(cronOptions, { timezone: 'Mars/Olympus' }, 'CHORUS_ERR_CRON_OPTIONS_INVALID'))?.message).toBe(
      'invalid cron option "timezone": "Mars/Olympus" is not an IANA time zone',
    )
    expect(refusal(() => checkOptions(cronOptions, { missed: 'all' }, 'CHORUS_ERR_CRON_OPTIONS_INVALID'))?.option).toBe('missed')
    expect(checkOptions(cronOptions, { timezone: 'Europe/Zurich', missed: 'run-once' }, 'CHORUS_ERR_CRON_OPTIONS_INVALID').missed).toBe('run-once')
    expect(refusal(() => checkOptions(singletonOptions, {}, 'CHORUS_ERR_SINGLETON_OPTIONS_INVALID'))).toEqual({
      code: 'CHORUS_ERR_SINGLETON_OPTIONS_INVALID',
      option: 'start',
      message: 'invalid singleton option "start": must be a function',
    })
    expect(refusal(() => checkOptions(singletonOptions, { start() {}, stop() {} }, 'CHORUS_ERR_SINGLETON_OPTIONS_INVALID'))?.option).toBe('stop')
  })
})
