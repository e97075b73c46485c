/**
 * How shared-state values become text and back. JSON by default; any codec with `encode`/`decode`
 * can replace it. Every encoded value is checked against a size limit before anything is written.
 */
import { ChorusError } from '../errors.js'

export interface Codec<T> {
  encode(value: T): string
  decode(text: string): T
}

export const json: Codec<unknown> = {
  encode(value) {
    let text: string | undefined
    try {
      text = JSON.stringify(value)
    } catch (err) {
      throw new ChorusError('CHORUS_ERR_STATE_VALUE_NOT_SERIALIZABLE', [(err as Error).message], { cause: err })
    }
    if (text === undefined) throw new ChorusError('CHORUS_ERR_STATE_VALUE_NOT_SERIALIZABLE', [`${typeof value} has no JSON form`])
    return text
  },
  decode(text) {
    return JSON.parse(text) as unknown
  },
}

const NAME = /^[A-Za-z0-9_.:-]{1,100}$/

export function checkName(kind: string, name: unknown): asserts name is string {
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw new ChorusError('CHORUS_ERR_STATE_NAME_INVALID', [kind, JSON.stringify(name)], { details: { name } })
  }
}

export function checkKey(key: unknown, maxBytes = 1024): asserts key is string {
  if (typeof key !== 'string' || key.length === 0 || key.includes('\u0000') || Buffer.byteLength(key) > maxBytes) {
    throw new ChorusError('CHORUS_ERR_STATE_KEY_INVALID', [JSON.stringify(typeof key === 'string' ? key.slice(0, 50) : key), maxBytes])
  }
}

export function encodeChecked<T>(codec: Codec<T>, value: T, limit: number): string {
  const text = codec.encode(value)
  if (typeof text !== 'string') throw new ChorusError('CHORUS_ERR_STATE_VALUE_NOT_SERIALIZABLE', ['the codec did not return a string'])
  if (text.includes('\u0000')) throw new ChorusError('CHORUS_ERR_STATE_VALUE_NOT_SERIALIZABLE', ['encoded values cannot contain NUL characters'])
  const bytes = Buffer.byteLength(text)
  if (bytes > limit) throw new ChorusError('CHORUS_ERR_STATE_VALUE_TOO_LARGE', [bytes, limit], { details: { bytes, limit } })
  return text
}
