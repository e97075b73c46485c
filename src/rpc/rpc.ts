/**
 * Signed RPC between instances (`cluster.rpc`): `handle` a method, `call` one member, or
 * `broadcast` to every live member and get what came back by the deadline — results, errors, and
 * the members that did not answer — never hanging on a dead or slow one. Served under a reserved
 * path of the application's own HTTP(S) server: `attach(server)`, `handler` (middleware) or
 * `fastify` (plugin).
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import { z } from 'zod'
import { ChorusError, toError } from '../errors.js'
import type { Membership } from '../membership/membership.js'
import type { Subsystem, SubsystemDeps } from '../subsystem.js'
import { LinkedSignal, untilAborted } from '../util/abort.js'
import { Machine } from '../util/machine.js'
import { parseOptions } from '../util/parse-options.js'
import { RpcClient, timeout } from './client.js'
import { rpcKey } from './sign.js'
import { METHOD_PATTERN, RpcServer, type RpcHandler } from './server.js'

export type { RpcContext, RpcHandler } from './server.js'

/**
 * The states of the RPC subsystem and where each may be entered from:
 * - `open`: serving and calling (the initial state).
 * - `closed`: calls refused, incoming requests answered 503. Final.
 */
const enteredFrom = { open: [], closed: ['open'] } as const
export type RpcState = keyof typeof enteredFrom

/** The subsystem's state machine, starting `open` (exported so its edges can be tested alone). */
export function rpcMachine(): Machine<RpcState> {
  return new Machine<RpcState>('rpc', enteredFrom, 'open')
}

const MS = 'must be a whole number of milliseconds above 0'

const callOptionsSchema = z.strictObject(
  {
    /** Deadline of the call. Default: option `rpc.timeoutMs` (5 s). */
    timeoutMs: z.number({ error: MS }).int({ error: MS }).min(1, { error: MS }).max(2_147_483_647, { error: MS }).optional(),
    /** Gives up early; rejects with the signal's reason. */
    signal: z.instanceof(AbortSignal, { error: 'must be an AbortSignal' }).optional(),
  },
  { error: 'must be an object' },
)

const broadcastOptionsSchema = callOptionsSchema.extend({
  /** Call this instance too (directly, without HTTP). Default: `true`. */
  includeSelf: z.boolean({ error: 'must be true or false' }).optional(),
})

export type CallOptions = z.input<typeof callOptionsSchema>
export type BroadcastOptions = z.input<typeof broadcastOptionsSchema>

export interface BroadcastResult<R = unknown> {
  /** The result of each member that answered. */
  readonly results: Record<string, R>
  /** Members that answered with an error (its handler threw, no such method, refused…). */
  readonly errors: Record<string, { readonly code: string; readonly message: string }>
  /** Members that did not answer by the deadline, or could not be reached. */
  readonly missing: string[]
}

/** The part of a Fastify instance the plugin uses, so that Fastify is not needed at run time. */
export interface FastifyLike {
  route(opts: {
    method: string | string[]
    url: string
    onRequest: (request: { raw: IncomingMessage }, reply: { raw: ServerResponse; hijack(): unknown }, done: (err?: Error) => void) => void
    handler: (request: unknown, reply: unknown) => unknown
  }): unknown
}

export type FastifyPluginLike = (instance: FastifyLike, opts: unknown, done: (err?: Error) => void) => void

/** Codes meaning "no answer": the member is reported missing, not failed. */
const NO_ANSWER = new Set(['CHORUS_ERR_RPC_TIMEOUT', 'CHORUS_ERR_RPC_UNREACHABLE', 'CHORUS_ERR_RPC_UNKNOWN_MEMBER'])

export class Rpc implements Subsystem {
  readonly name = 'rpc'
  readonly #members: Membership
  readonly #log: Logger
  readonly #handlers = new Map<string, RpcHandler>()
  readonly #server: RpcServer
  readonly #client: RpcClient
  readonly #closing = new AbortController()
  readonly #timeoutMs: number
  readonly #maxBodyBytes: number
  readonly #path: string
  readonly #machine = rpcMachine()

  constructor(deps: SubsystemDeps) {
    const o = deps.options.rpc
    const key = rpcKey(deps.options.secret)
    const self = () => deps.options.instanceId
    this.#members = deps.members
    this.#log = deps.log.child({ subsystem: 'rpc' })
    this.#timeoutMs = o.timeoutMs
    this.#maxBodyBytes = o.maxBodyBytes
    this.#path = o.path
    this.#server = new RpcServer({
      key, instanceId: self, path: o.path, maxBodyBytes: o.maxBodyBytes, windowMs: o.windowMs, maxNonces: o.maxNonces,
      handlers: this.#handlers, events: deps.events, log: this.#log, closing: this.#closing.signal,
    })
    this.#client = new RpcClient({ key, path: o.path, maxBodyBytes: o.maxBodyBytes, ca: o.ca, self })
  }

  /** Serves `method` on this instance; returns a function that removes the handler. */
  handle<P = unknown, R = unknown>(method: string, fn: RpcHandler<P, R>): () => void {
    checkMethod(method)
    if (typeof fn !== 'function') throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', ['handler', 'must be a function'], { details: { option: 'handler' } })
    if (this.#handlers.has(method)) throw new ChorusError('CHORUS_ERR_RPC_DUPLICATE', [method])
    this.#handlers.set(method, fn as RpcHandler)
    return () => {
      if (this.#handlers.get(method) === fn) this.#handlers.delete(method)
    }
  }

  /**
   * Calls `method` on one live member (this one included) and resolves with its result. Rejects
   * by the deadline with a typed error: the handler's own `ChorusError`, `…_RPC_HANDLER_FAILED`,
   * `…_RPC_TIMEOUT`, `…_RPC_UNREACHABLE`, `…_RPC_UNKNOWN_MEMBER`, `…_RPC_METHOD_NOT_FOUND`.
   */
  async call<R = unknown>(instanceId: string, method: string, payload?: unknown, opts: CallOptions = {}): Promise<R> {
    checkMethod(method)
    const o = parseOptions(callOptionsSchema, opts)
    const timeoutMs = o.timeoutMs ?? this.#timeoutMs
    this.#assertOpen()
    o.signal?.throwIfAborted()
    return (await this.#send(instanceId, method, this.#encode(payload, 'payload'), timeoutMs, o.signal)) as R
  }

  async #send(instanceId: string, method: string, body: string, timeoutMs: number, signal: AbortSignal | undefined): Promise<unknown> {
    if (instanceId === this.#members.self.instanceId) return this.#local(method, body, timeoutMs, signal)
    const member = this.#members.get(instanceId)
    if (!member || member.status === 'down' || !member.advertiseUrl) {
      throw new ChorusError('CHORUS_ERR_RPC_UNKNOWN_MEMBER', [JSON.stringify(instanceId)], { details: { instanceId } })
    }
    return this.#client.send({ instanceId, url: member.advertiseUrl }, method, body, timeoutMs, signal)
  }

  /**
   * Calls `method` on every live member at once and resolves by the deadline with what came back:
   * `results` and `errors` by instance id, and `missing` — members that did not answer in time or
   * could not be reached (a dead member is missing until membership declares it down).
   */
  async broadcast<R = unknown>(method: string, payload?: unknown, opts: BroadcastOptions = {}): Promise<BroadcastResult<R>> {
    checkMethod(method)
    const o = parseOptions(broadcastOptionsSchema, opts)
    const timeoutMs = o.timeoutMs ?? this.#timeoutMs
    this.#assertOpen()
    const body = this.#encode(payload, 'payload') // a bad payload fails the broadcast, not each call
    const self = this.#members.self.instanceId
    // Chorus instances only: services registered through the Eureka API are members without RPC.
    const ids = new Set(this.#members.list().filter((m) => m.kind === 'chorus').map((m) => m.instanceId))
    if (o.includeSelf === false) ids.delete(self)
    else ids.add(self)
    const results: Record<string, R> = {}
    const errors: Record<string, { code: string; message: string }> = {}
    const missing: string[] = []
    const deadline = new AbortController()
    const timer = setTimeout(() => deadline.abort(), timeoutMs)
    const link = new LinkedSignal([deadline.signal, o.signal])
    const signal = link.signal
    try {
      await Promise.all(
        [...ids].sort().map(async (id) => {
          try {
            // Each call has its own deadline, the same; the race below is a second guard.
            const value = await untilAborted(this.#send(id, method, body, timeoutMs, signal), signal)
            results[id] = value as R
          } catch (err) {
            const code = (err as { code?: unknown }).code
            if (deadline.signal.aborted || (typeof code === 'string' && NO_ANSWER.has(code))) missing.push(id)
            else if (o.signal?.aborted) throw o.signal.reason
            else errors[id] = { code: typeof code === 'string' ? code : 'CHORUS_ERR_RPC_HANDLER_FAILED', message: toError(err).message }
          }
        }),
      )
    } finally {
      clearTimeout(timer)
      link.dispose()
    }
    o.signal?.throwIfAborted()
    missing.sort()
    return { results, errors, missing }
  }

  /**
   * Serves RPC on a Node HTTP or HTTPS server: requests to the RPC path are answered here and never
   * reach the application's listeners. Returns a function that undoes it.
   */
  attach(server: Pick<Server, 'emit'>): () => void {
    if (server === null || typeof server !== 'object' || typeof server.emit !== 'function') {
      throw new ChorusError('CHORUS_ERR_OPTIONS_INVALID', ['server', 'must be a Node HTTP or HTTPS server'], { details: { option: 'server' } })
    }
    const original = server.emit
    const rpc = this.#server
    const patched = function (this: unknown, event: string | symbol, ...args: unknown[]): boolean {
      if (event === 'request' && rpc.matches(args[0] as IncomingMessage)) {
        void rpc.serve(args[0] as IncomingMessage, args[1] as ServerResponse)
        return true
      }
      return (original as (...a: unknown[]) => boolean).call(this, event, ...args)
    }
    server.emit = patched as Server['emit']
    // Left in place when the cluster closes: peers then get a signed 503, not the application's 404.
    return () => {
      if (server.emit === patched) server.emit = original
    }
  }

  /** Connect/Express-style middleware: serves the RPC path, passes everything else to `next`. */
  readonly handler = (req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void): void => {
    if (this.#server.matches(req)) {
      void this.#server.serve(req, res)
      return
    }
    if (next) next()
    else {
      res.statusCode = 404
      res.end()
    }
  }

  /** A Fastify plugin serving the RPC path: `app.register(cluster.rpc.fastify)` (without a prefix). */
  readonly fastify: FastifyPluginLike = (instance, _opts, done) => {
    const rpc = this.#server
    try {
      instance.route({
        method: 'POST',
        url: `${this.#path}/*`,
        // Before Fastify reads the body: the signature covers the raw bytes.
        onRequest: (request, reply) => {
          reply.hijack()
          void rpc.serve(request.raw, reply.raw)
        },
        handler: () => undefined,
      })
      done()
    } catch (err) {
      done(toError(err))
    }
  }

  /** Part of the subsystem lifecycle: called by the cluster, not by applications. */
  async close(): Promise<void> {
    if (this.#machine.is('closed')) return
    this.#machine.to('closed')
    this.#closing.abort(new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', ['closing', 'serving RPC']))
    await this.#client.close()
  }

  async #local(method: string, body: string, timeoutMs: number, signal: AbortSignal | undefined): Promise<unknown> {
    const self = this.#members.self.instanceId
    const handler = this.#handlers.get(method)
    if (!handler) throw new ChorusError('CHORUS_ERR_RPC_METHOD_NOT_FOUND', [method, self], { details: { instanceId: self } })
    const payload: unknown = JSON.parse(body)
    const deadline = new AbortController()
    const timer = setTimeout(() => deadline.abort(timeout(method, self, timeoutMs)), timeoutMs)
    const link = new LinkedSignal([deadline.signal, this.#closing.signal, signal])
    const stop = link.signal
    try {
      const run = (async () => handler(payload, { from: self, method, signal: stop }))()
      let result: unknown
      try {
        result = await untilAborted(run, stop)
      } catch (err) {
        if (stop.aborted) throw stop.reason
        if (err instanceof ChorusError) throw err
        const e = toError(err)
        const remoteCode = (e as { code?: unknown }).code
        throw new ChorusError('CHORUS_ERR_RPC_HANDLER_FAILED', [method, self, e.message], {
          cause: err, details: { instanceId: self, ...(typeof remoteCode === 'string' ? { remoteCode } : {}) },
        })
      }
      // The same shape as over HTTP: a JSON copy, within the size limit.
      return JSON.parse(this.#encode(result === undefined ? null : result, 'result'))
    } finally {
      clearTimeout(timer)
      link.dispose()
    }
  }

  /** The JSON text of `value`, within the size limit. */
  #encode(value: unknown, what: 'payload' | 'result'): string {
    let text: string
    try {
      text = JSON.stringify(value === undefined ? null : value)
    } catch (err) {
      throw new ChorusError('CHORUS_ERR_RPC_PAYLOAD_INVALID', [what, toError(err).message])
    }
    // Cheap bound first: a UTF-16 unit is at most 3 UTF-8 bytes.
    const bytes = text.length * 3 <= this.#maxBodyBytes ? text.length : Buffer.byteLength(text)
    if (bytes > this.#maxBodyBytes) {
      throw new ChorusError('CHORUS_ERR_RPC_BODY_TOO_LARGE', [what === 'payload' ? 'request' : 'answer', bytes, this.#maxBodyBytes])
    }
    return text
  }

  #assertOpen(): void {
    if (this.#machine.is('closed')) throw new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', ['closed', 'an RPC call'])
  }
}

function checkMethod(method: unknown): asserts method is string {
  if (typeof method !== 'string' || !METHOD_PATTERN.test(method)) {
    throw new ChorusError('CHORUS_ERR_RPC_METHOD_INVALID', [typeof method === 'string' ? JSON.stringify(method.slice(0, 140)) : typeof method])
  }
}
