/**
 * Bus URLs as they may be shown: in errors and logs a URL never carries its password.
 * A NATS URL may list several servers separated by commas; each is shown.
 * Also the check of the prefix that keeps clusters apart on a shared broker.
 */
import { ChorusError } from '../errors.js'

export function describeBusUrl(url: string): string {
  if (typeof url !== 'string') return '<not a URL>'
  const shown = url
    .split(',')
    .map((part) => {
      try {
        const u = new URL(part.trim())
        if (u.password) u.password = '***'
        for (const key of [...u.searchParams.keys()]) if (/pass|token|secret/i.test(key)) u.searchParams.set(key, '***')
        return u.toString()
      } catch {
        return '<not a URL>'
      }
    })
    .join(',')
    .replace(/[\u0000-\u001f\u007f]/g, '?')
  return shown.length > 160 ? `${shown.slice(0, 157)}...` : shown
}

const PREFIX = /^[A-Za-z0-9_-]{1,100}$/

/**
 * Checks the name that keeps clusters apart on a shared broker (the Redis channel `<prefix>:bus`,
 * the NATS subject `<prefix>.bus`): 1-100 of A-Z a-z 0-9 _ -, so it is one NATS token.
 */
export function checkPrefix(prefix: unknown): string {
  if (typeof prefix !== 'string' || !PREFIX.test(prefix)) {
    throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', ['bus prefix', `${JSON.stringify(prefix)} is not 1-100 of A-Z a-z 0-9 _ -`], { details: { option: 'bus.prefix' } })
  }
  return prefix
}
