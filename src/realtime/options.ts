/**
 * The options of `realtime.attach(server, options)`, in one strict schema: an unknown key, a limit
 * that is not a positive integer or a callback that is not a function is refused with
 * `CHORUS_ERR_OPTIONS_INVALID` naming the option, before anything is attached. The types and the
 * defaults come from the schema. Origins and proxy addresses are checked entry by entry in
 * admission.ts (`originCheck`, `trustedProxies`), which says what is wrong with an entry.
 */
import type { IncomingMessage } from 'node:http'
import { z } from 'zod'
import type { AllowedOrigins } from './admission.js'
import type { Principal } from './connection.js'
import { defaultParserLimits } from './parser.js'

const POSITIVE = 'must be a positive integer'
const count = z.number({ error: POSITIVE }).int({ error: POSITIVE }).min(1, { error: POSITIVE })
const TIMER = 'must be a whole number of milliseconds up to 2147483647'
const timer = z.number({ error: TIMER }).int({ error: TIMER }).max(2_147_483_647, { error: TIMER })

const parserDefaults = defaultParserLimits

const limitsSchema = z.strictObject(
  {
    /** Largest frame (command, headers and body), in bytes. Default 80 KiB. */
    maxFrameBytes: count.default(parserDefaults.maxFrameBytes),
    /** Most headers in one frame. Default 64. */
    maxHeaders: count.default(parserDefaults.maxHeaders),
    /** Longest command or header line, in bytes. Default 8 KiB. */
    maxHeaderLineBytes: count.default(parserDefaults.maxHeaderLineBytes),
    /** Largest body, in bytes. Default 64 KiB. */
    maxBodyBytes: count.default(parserDefaults.maxBodyBytes),
    /** Subscriptions one connection may hold. Default 100. */
    maxSubscriptions: count.default(100),
    /** Bytes queued for a client before it is disconnected as a slow consumer. Default 1 MiB. */
    maxPendingBytes: count.default(1024 * 1024),
    /** Frames received but not yet handled, per connection. Default 64. */
    maxPendingFrames: count.default(64),
    /** Messages replayed on resume before a gap notice is sent instead. Default 1,000. */
    maxReplay: count.default(1000),
    /** Time allowed between the upgrade and CONNECT. Default 10 s. */
    connectTimeoutMs: timer.min(1, { error: TIMER }).default(10_000),
    /** Connections one principal (by name) may hold on this endpoint of this instance; more are refused at the upgrade (429) or on CONNECT (ERROR). Default 20. */
    maxConnectionsPerPrincipal: count.default(20),
    /** Connections one client address may hold on this endpoint of this instance, counted from the upgrade; more are refused with 429. Default 1,000. */
    maxConnectionsPerAddress: count.default(1000),
  },
  { error: 'must be an object' },
)

/** The limits of one endpoint, every one set (`attach` fills in the defaults). */
export type RealtimeLimits = z.output<typeof limitsSchema>

type Authenticate = (
  request: IncomingMessage,
  connectHeaders?: Readonly<Record<string, string>>,
  current?: Principal | null,
) => Principal | null | undefined | Promise<Principal | null | undefined>
type Authorize = (principal: Principal | null, action: 'subscribe' | 'send', destination: string) => boolean | Promise<boolean>

const isFunction = (v: unknown) => typeof v === 'function'

export const attachOptionsSchema = z.strictObject(
  {
    /** URL path of the WebSocket endpoint. Default `/stomp`. */
    path: z.string({ error: 'must be a URL path such as /stomp' }).startsWith('/', { error: 'must be a URL path such as /stomp' }).default('/stomp'),
    /**
     * Identifies the user: at the upgrade (`headers` undefined; cookies and headers on `request`) and
     * again on CONNECT (its headers, e.g. login/passcode). Return a principal, or null for anonymous;
     * throw to refuse (401 at the upgrade, ERROR on CONNECT). Default: everyone is anonymous.
     */
    authenticate: z.custom<Authenticate>(isFunction, { error: 'must be a function' }).optional(),
    /** Decides SUBSCRIBE and SEND. Anything but `true` denies. Default: deny everything. */
    authorize: z.custom<Authorize>(isFunction, { error: 'must be a function' }).optional(),
    /** Heart-beats this server offers: send every `send` ms, expects one every `receive` ms (0: none). Default 10 000 each. */
    heartbeat: z
      .strictObject({ send: timer.min(0, { error: TIMER }).default(10_000), receive: timer.min(0, { error: TIMER }).default(10_000) }, { error: 'must be an object' })
      .prefault({}),
    /**
     * Browser origins allowed to open a connection besides this server's own (the `Origin` naming
     * the request's `Host`): full origins such as `https://app.example.com`, or `'*'` for any. Other
     * origins are refused at the upgrade with 403. A request without `Origin` (not a browser) passes.
     * Default: none besides the server's own.
     */
    allowedOrigins: z
      .custom<AllowedOrigins>((v) => v === '*' || Array.isArray(v), { error: 'must be "*" or an array of origins' })
      .optional(),
    /**
     * Addresses of proxies (the balancer, nginx) whose `X-Forwarded-For` names the client, for the
     * per-address limit. Default none: the socket's peer is the client.
     */
    trustProxy: z.custom<readonly string[]>((v) => Array.isArray(v), { error: 'must be an array of IP addresses' }).optional(),
    /** Limits of this endpoint; each one left out has its default (see `RealtimeLimits`). */
    limits: limitsSchema.prefault({}),
  },
  { error: 'must be an object' },
)

/** What `attach` accepts: every option may be left out. */
export type AttachOptions = z.input<typeof attachOptionsSchema>
/** The options of one endpoint, defaults filled in. */
export type EndpointOptions = z.output<typeof attachOptionsSchema>
