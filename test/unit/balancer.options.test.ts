import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import { Balancer } from '../../src/balancer/balancer.js'
import { renderNginx } from '../../src/balancer/nginx.js'
import type { MemberWatcher } from '../../src/balancer/watcher.js'
import { isChorusError } from '../../src/errors.js'

const log = pino({ level: 'silent' })
const watcher = { members: [], onChange: () => () => undefined } as unknown as MemberWatcher

/** The option a refusal names, or null when nothing was refused. */
function refusedOption(fn: () => unknown): string | null {
  try {
    fn()
  } catch (err) {
    expect(isChorusError(err, 'CHORUS_ERR_OPTIONS_INVALID')).toBe(true)
    return (err as { details: { option: string } }).details.option
  }
  return null
}

describe('the balancer\'s options', () => {
  it('accepts the documented options and refuses unknown keys and bad values, naming the option', () => {
    expect(refusedOption(() => new Balancer(watcher, log, { port: 0, secret: 's', strategy: 'least-connections', trustProxy: ['10.0.0.0/8'] }))).toBeNull()
    expect(refusedOption(() => new Balancer(watcher, log, { port: 0, secret: 's', stikcy: true } as never))).toBe('stikcy')
    expect(refusedOption(() => new Balancer(watcher, log, { port: 0, secret: 's', strategy: 'random' as never }))).toBe('strategy')
    expect(refusedOption(() => new Balancer(watcher, log, { port: 70_000, secret: 's' }))).toBe('port')
    expect(refusedOption(() => new Balancer(watcher, log, { port: 0, secret: 's', ejectMs: -1 }))).toBe('ejectMs')
    expect(refusedOption(() => new Balancer(watcher, log, { port: 0, secret: 's', stickyCookie: 'a b' }))).toBe('stickyCookie')
    expect(refusedOption(() => new Balancer(watcher, log, { port: 0, secret: 's', trustProxy: ['not-an-address'] }))).toBe('trustProxy')
  })

  it('refuses nginx names that would break the rendered config with a typed error', () => {
    expect(refusedOption(() => renderNginx([], { upstreamName: 'app; evil' }))).toBe('upstreamName')
    expect(refusedOption(() => renderNginx([], { stickyCookie: 'x}' }))).toBe('stickyCookie')
    expect(refusedOption(() => renderNginx([], { keepalive: 0 }))).toBe('keepalive')
    expect(refusedOption(() => renderNginx([], { listne: '80' } as never))).toBe('listne')
    expect(renderNginx([], { upstreamName: 'chorus_app', full: false })).toContain('upstream chorus_app {')
  })
})
