/**
 * Secrets of the shared configuration at rest: AES-256-GCM under a key derived by HKDF-SHA256 from
 * the cluster secret, a fresh 96-bit nonce per value, and the key's name as associated data, so a
 * ciphertext moved to another key does not decrypt. Stored leaves look like `{"$secret": "v1.…"}`;
 * a plain leaf is never an object, so the two cannot be confused.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto'
import { ChorusError } from '../errors.js'
import { isPlainObject, type Leaf } from './keys.js'

export interface Sealed {
  readonly $secret: string
}

export function isSealed(v: unknown): v is Sealed {
  return isPlainObject(v) && typeof v.$secret === 'string' && Object.keys(v).length === 1
}

export class SecretBox {
  readonly #key: Buffer

  constructor(clusterSecret: string) {
    this.#key = Buffer.from(hkdfSync('sha256', clusterSecret, 'chorus-config', 'chorus config secrets v1', 32))
  }

  seal(key: string, value: Leaf): Sealed {
    const iv = randomBytes(12)
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv)
    cipher.setAAD(Buffer.from(key))
    const body = Buffer.concat([cipher.update(JSON.stringify(value), 'utf8'), cipher.final(), cipher.getAuthTag()])
    return { $secret: `v1.${iv.toString('base64url')}.${body.toString('base64url')}` }
  }

  open(key: string, sealed: Sealed, version: number): Leaf {
    try {
      const [tag, iv, body] = sealed.$secret.split('.')
      if (tag !== 'v1' || !iv || !body) throw new Error('unknown format')
      const raw = Buffer.from(body, 'base64url')
      const decipher = createDecipheriv('aes-256-gcm', this.#key, Buffer.from(iv, 'base64url'))
      decipher.setAAD(Buffer.from(key))
      decipher.setAuthTag(raw.subarray(raw.length - 16))
      const text = Buffer.concat([decipher.update(raw.subarray(0, raw.length - 16)), decipher.final()]).toString('utf8')
      return JSON.parse(text) as Leaf
    } catch (err) {
      throw new ChorusError('CHORUS_ERR_CONFIG_DECRYPT', [key, version], { cause: err, details: { key, version } })
    }
  }
}
