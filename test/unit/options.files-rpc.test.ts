import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { isChorusError } from '../../src/errors.js'
import { resolveOptions, type ClusterOptions } from '../../src/options.js'

function refused(input: ClusterOptions, option: string, env: NodeJS.ProcessEnv = {}): void {
  try {
    resolveOptions(input, env)
  } catch (err) {
    expect(isChorusError(err, 'CHORUS_ERR_OPTIONS_INVALID')).toBe(true)
    expect((err as { details: { option: string } }).details.option).toBe(option)
    return
  }
  throw new Error(`${JSON.stringify(input)} was accepted`)
}

describe('options of files and rpc', () => {
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'chorus-options-'))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('has defaults', () => {
    const o = resolveOptions({}, {})
    expect(o.files.root).toMatch(/\.chorus\/files$/)
    expect(o.files).toMatchObject({ maxFileBytes: 100 * 1024 * 1024, tempMaxAgeMs: 6 * 60 * 60 * 1000 })
    expect(o.rpc).toEqual({ path: '/_chorus/rpc', maxBodyBytes: 1024 * 1024, timeoutMs: 5000, windowMs: 30_000, maxNonces: 100_000, ca: null })
    expect(Object.isFrozen(o.rpc) && Object.isFrozen(o.files)).toBe(true)
  })

  it('refuses bad values and unknown keys, naming the option', () => {
    refused({ rpc: { path: 'rpc' } }, 'rpc.path')
    refused({ rpc: { path: '/rpc/' } }, 'rpc.path')
    refused({ rpc: { maxBodyBytes: 0 } }, 'rpc.maxBodyBytes')
    refused({ rpc: { windowMs: 10 } }, 'rpc.windowMs')
    refused({ rpc: { ca: 'not a certificate' } }, 'rpc.ca')
    refused({ files: { maxFileBytes: -1 } }, 'files.maxFileBytes')
    refused({ files: { rooot: '/x' } } as never, 'files.rooot')
    refused({ rpc: 5 } as never, 'rpc')
  })

  it('reads CHORUS_FILES_ROOT, CHORUS_FILES_MAX_FILE_BYTES, CHORUS_RPC_TIMEOUT_MS and CHORUS_RPC_CA_FILE', async () => {
    const caFile = join(dir, 'ca.pem')
    await writeFile(caFile, '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n')
    const o = resolveOptions({}, { CHORUS_FILES_ROOT: '/srv/shared', CHORUS_FILES_MAX_FILE_BYTES: '1000', CHORUS_RPC_TIMEOUT_MS: '900', CHORUS_RPC_CA_FILE: caFile })
    expect(o.files).toMatchObject({ root: '/srv/shared', maxFileBytes: 1000 })
    expect(o.rpc.timeoutMs).toBe(900)
    expect(o.rpc.ca).toContain('BEGIN CERTIFICATE')
    refused({}, 'CHORUS_RPC_CA_FILE', { CHORUS_RPC_CA_FILE: join(dir, 'missing.pem') })
    expect(resolveOptions({ files: { root: '/explicit' } }, { CHORUS_FILES_ROOT: '/srv/shared' }).files.root).toBe('/explicit')
  })
})
