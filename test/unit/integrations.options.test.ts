// The framework helpers refuse bad options with CHORUS_ERR_OPTIONS_INVALID naming the option,
// before they touch the app or the process.
import { describe, expect, it } from 'vitest'
import type { Cluster } from '../../src/cluster.js'
import { serveArea } from '../../src/files/serve.js'
import { useCluster as useExpress, type ExpressAppLike } from '../../src/integrations/express.js'
import { useCluster as useFastify, type FastifyAppLike } from '../../src/integrations/fastify.js'
import { handleSignals } from '../../src/integrations/signals.js'

const invalid = (option: string) => expect.objectContaining({ code: 'CHORUS_ERR_OPTIONS_INVALID', details: { option } })
const cluster = {} as Cluster
const untouched = new Proxy({}, { get: () => { throw new Error('the app was touched') } })
const area = { stat: async () => null, createReadStream: async () => { throw new Error('unused') } }

describe('options of the framework helpers', () => {
  it('useCluster (Express) refuses unknown keys, bad values and a session with its own store', () => {
    expect(() => useExpress(untouched as ExpressAppLike, cluster, { sesion: {} } as never)).toThrow(invalid('sesion'))
    expect(() => useExpress(untouched as ExpressAppLike, cluster, { metrics: 'metrics' })).toThrow(invalid('metrics'))
    expect(() => useExpress(untouched as ExpressAppLike, cluster, { session: { secret: 's', store: {} } })).toThrow(invalid('session'))
    expect(() => useExpress(untouched as ExpressAppLike, cluster, { signals: { timeoutMs: 5 } })).toThrow(invalid('signals.timeoutMs'))
  })

  it('useCluster (Fastify) refuses unknown keys and bad values', () => {
    expect(() => useFastify(untouched as FastifyAppLike, cluster, { rpc: 'yes' } as never)).toThrow(invalid('rpc'))
    expect(() => useFastify(untouched as FastifyAppLike, cluster, { realtime: true } as never)).toThrow(invalid('realtime'))
  })

  it('handleSignals refuses a bad deadline or signal before installing anything', () => {
    const before = process.listenerCount('SIGTERM')
    expect(() => handleSignals(cluster, { timeoutMs: 10 })).toThrow(invalid('timeoutMs'))
    expect(() => handleSignals(cluster, { signals: ['SIGHUP' as 'SIGTERM'] })).toThrow(invalid('signals.0'))
    expect(process.listenerCount('SIGTERM')).toBe(before)
  })

  it('serveArea refuses a bad prefix or cache age', () => {
    expect(() => serveArea(area, { prefix: 'uploads' })).toThrow(invalid('prefix'))
    expect(() => serveArea(area, { prefix: '/uploads/' })).toThrow(invalid('prefix'))
    expect(() => serveArea(area, { maxAgeSeconds: -1 })).toThrow(invalid('maxAgeSeconds'))
  })
})
