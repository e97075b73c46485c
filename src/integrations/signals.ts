/**
 * Graceful shutdown on SIGTERM/SIGINT, so applications stop writing their own: the first signal
 * drains the cluster (readiness fails, no new work), stops the application's HTTP servers, closes
 * the cluster (locks released, jobs handed back, membership left), and exits 0 — or exits 1 when
 * that has not finished within `timeoutMs`. A second signal exits at once (128 + its number).
 */
import type { Server } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { z } from 'zod'
import type { Cluster } from '../cluster.js'
import { toError } from '../errors.js'
import { parseOptions } from '../util/parse-options.js'

const SIGNAL_NUMBERS = { SIGINT: 2, SIGTERM: 15 } as const
type HandledSignal = keyof typeof SIGNAL_NUMBERS

const isFunction = (v: unknown) => typeof v === 'function'

export const signalOptionsSchema = z.strictObject(
  {
    /**
     * Everything (drain, stopping the servers, close) must finish within this many ms, else the
     * process exits 1. Default: the cluster's `closeTimeoutMs` plus 5 s.
     */
    timeoutMs: z.number({ error: 'must be a number of milliseconds' }).int({ error: 'must be an integer' }).min(100, { error: 'must be at least 100' }).max(600_000, { error: 'must be at most 600000' }).optional(),
    /** The signals handled. Default both. */
    signals: z.array(z.enum(['SIGTERM', 'SIGINT'], { error: 'must be SIGTERM or SIGINT' })).min(1, { error: 'must name a signal' }).default(['SIGTERM', 'SIGINT']),
    /** HTTP servers to stop (no new connections; idle ones closed; busy ones finish) once the drain began. */
    servers: z.custom<readonly Server[]>((v) => Array.isArray(v), { error: 'must be an array of HTTP servers' }).optional(),
    /** Stops the application (e.g. `fastify.close()`) once the drain began, before the cluster closes. */
    stop: z.custom<() => unknown>(isFunction, { error: 'must be a function' }).optional(),
    /** How the process ends. Default `process.exit`. */
    exit: z.custom<(code: number) => void>(isFunction, { error: 'must be a function' }).optional(),
  },
  { error: 'must be an object' },
)

export type SignalOptions = z.input<typeof signalOptionsSchema>

/** The part of a cluster a shutdown needs. */
export type ClosableCluster = Pick<Cluster, 'drain' | 'close' | 'log' | 'options'>

/**
 * Installs the handlers; returns a function that removes them. Call it once per process, after
 * `createCluster`.
 */
export function handleSignals(cluster: ClosableCluster, opts: SignalOptions = {}): () => void {
  const o = parseOptions(signalOptionsSchema, opts)
  const log = cluster.log.child({ subsystem: 'signals' })
  const exit = o.exit ?? ((code: number) => process.exit(code))
  const timeoutMs = o.timeoutMs ?? cluster.options.closeTimeoutMs + 5000
  let stopping = false
  const onSignal = (signal: HandledSignal) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting at once')
      exit(128 + SIGNAL_NUMBERS[signal])
      return
    }
    stopping = true
    log.info({ signal, timeoutMs }, 'signal: draining, then closing')
    const deadline = new AbortController()
    const shutdown = (async () => {
      await cluster.drain()
      await Promise.all([...(o.servers ?? []).map((s) => stopServer(s, deadline.signal)), o.stop?.()])
      await cluster.close()
    })()
    const expired = sleep(timeoutMs, 'expired' as const, { signal: deadline.signal, ref: false }).catch(() => 'cancelled' as const)
    void Promise.race([shutdown.then(() => 'done' as const), expired]).then(
      (outcome) => {
        deadline.abort()
        if (outcome === 'done') return exit(0)
        log.warn({ timeoutMs }, `shutdown did not finish within ${timeoutMs} ms; exiting`)
        exit(1)
      },
      (err: unknown) => {
        deadline.abort()
        log.warn({ err: toError(err) }, 'shutdown failed; exiting')
        exit(1)
      },
    )
  }
  for (const s of o.signals) process.on(s, onSignal)
  return () => {
    for (const s of o.signals) process.off(s, onSignal)
  }
}

/** Stops accepting connections, closes idle keep-alive ones, and resolves when the busy ones ended (or at the deadline). */
function stopServer(server: Server, deadline: AbortSignal): Promise<void> {
  if (!server.listening) return Promise.resolve()
  return new Promise<void>((resolve) => {
    server.close(() => resolve())
    server.closeIdleConnections()
    deadline.addEventListener('abort', () => resolve(), { once: true })
  })
}
