/**
 * One WebSocket endpoint of the gateway on one HTTP(S) server (`ws` in noServer mode, so it shares
 * any Node server): the upgrade and who is admitted. An upgrade is refused in plain HTTP, before any
 * work, when its page is of a foreign origin (403), its address holds its share (429), `authenticate`
 * throws (401), its principal holds its share (429) or the instance is draining (503); an admitted
 * one becomes a `Connection`. Upgrades to paths no endpoint serves are answered 404 and closed, so
 * none holds its socket for good.
 */
import type { IncomingMessage, Server as HttpServer } from 'node:http'
import type { Server as HttpsServer } from 'node:https'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { WebSocketServer, type WebSocket } from 'ws'
import { clientAddress, ConnectionCounts, originCheck, refuseUpgrade, trustedProxies } from './admission.js'
import { Connection, type ConnectionHost, type Principal } from './connection.js'
import type { EndpointOptions } from './options.js'

export interface Attachment {
  readonly path: string
  close(): void
}

/** What an endpoint needs from the gateway. */
export interface EndpointHost
  extends Pick<ConnectionHost, 'head' | 'instanceId' | 'subscribe' | 'unsubscribe' | 'sendFromClient' | 'opened' | 'closed'> {
  /** The instance's state when it takes no new connections (`draining`, `left`), else null. */
  refusing(): string | null
  /** A connection was upgraded. */
  accepted(conn: Connection): void
  /** Closes every connection of the gateway (the endpoint is closing). */
  closeAll(code: number, reason: string): void
}

const PROTOCOLS = ['v12.stomp', 'v11.stomp', 'v10.stomp']

/** Serves STOMP over WebSocket on `server` at `opts.path`; `close()` stops accepting and closes the gateway's connections. */
export function openEndpoint(server: HttpServer | HttpsServer, opts: EndpointOptions, gateway: EndpointHost): Attachment {
  const { path, limits, heartbeat, authenticate, authorize } = opts
  const checkOrigin = originCheck(opts.allowedOrigins)
  const trusted = trustedProxies(opts.trustProxy)
  // Connections of this endpoint per client address and per principal (the name each session is counted under).
  const counts = new ConnectionCounts()
  const countedAs = new Map<Connection, string>()
  const wss = new WebSocketServer({
    noServer: true,
    // Room for the parser to see an oversized frame and answer with ERROR; a WebSocket message
    // beyond twice the frame limit is cut off by ws itself (close 1009, no ERROR).
    maxPayload: limits.maxFrameBytes * 2 + 1024,
    handleProtocols: (offered: Set<string>) => PROTOCOLS.find((p) => offered.has(p)) ?? false,
  })
  const host: ConnectionHost = {
    limits,
    heartbeat,
    serverName: 'chorus/0.1',
    head: () => gateway.head(),
    instanceId: gateway.instanceId,
    authenticateConnect: async (request, headers, atUpgrade) => (authenticate ? ((await authenticate(request, headers, atUpgrade)) ?? atUpgrade ?? null) : atUpgrade),
    authorize: async (principal, action, destination) => (authorize ? (await authorize(principal, action, destination)) === true : false),
    subscribe: (sub, lastId) => gateway.subscribe(sub, lastId),
    unsubscribe: (sub) => gateway.unsubscribe(sub),
    sendFromClient: (conn, destination, headers, body) => gateway.sendFromClient(conn, destination, headers, body),
    admit: (principal) =>
      principal !== null && counts.principal(principal.name) >= limits.maxConnectionsPerPrincipal
        ? `${limits.maxConnectionsPerPrincipal} connections of this user on this instance (maxConnectionsPerPrincipal)`
        : null,
    opened: (conn) => {
      gateway.opened(conn)
      if (conn.principal) {
        counts.addPrincipal(conn.principal.name)
        countedAs.set(conn, conn.principal.name)
      }
    },
    closed: (conn) => {
      gateway.closed(conn)
      const name = countedAs.get(conn)
      if (name !== undefined) {
        countedAs.delete(conn)
        counts.removePrincipal(name)
      }
    },
  }
  const onUpgrade = (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = request.url ?? '/'
    const pathname = url.split('?')[0]
    if (pathname !== path) return refuseUnserved(server, socket, pathname ?? '', path)
    if (socket.destroyed) return
    // Refused before any work: a foreign page (cross-site WebSocket hijacking), then an address
    // over its share. The address slot is held until the socket closes, whatever happens next.
    const origin = checkOrigin(request)
    if (!origin.ok) return refuseUpgrade(socket, 403, 'CHORUS_ERR_REALTIME_ORIGIN_FORBIDDEN', [origin.why])
    const address = clientAddress(request, trusted)
    if (!counts.takeAddress(address, limits.maxConnectionsPerAddress)) {
      return refuseUpgrade(socket, 429, 'CHORUS_ERR_REALTIME_TOO_MANY_CONNECTIONS', [`${limits.maxConnectionsPerAddress} from this address (maxConnectionsPerAddress)`])
    }
    socket.once('close', () => counts.releaseAddress(address))
    void (async () => {
      let principal: Principal | null = null
      try {
        principal = authenticate ? ((await authenticate(request, undefined, null)) ?? null) : null
      } catch {
        return refuseUpgrade(socket, 401, 'CHORUS_ERR_REALTIME_UNAUTHENTICATED', ['the upgrade request was refused by authenticate'])
      }
      const refusing = gateway.refusing()
      if (refusing !== null) return refuseUpgrade(socket, 503, 'CHORUS_ERR_CLUSTER_CLOSED', [refusing, 'a new connection'], { 'Retry-After': '1' })
      const over = principal ? host.admit(principal) : null
      if (over !== null) return refuseUpgrade(socket, 429, 'CHORUS_ERR_REALTIME_TOO_MANY_CONNECTIONS', [over])
      wss.handleUpgrade(request, socket, head, (ws: WebSocket) => {
        gateway.accepted(new Connection(ws, request, principal, host, socket))
      })
    })()
  }
  server.on('upgrade', onUpgrade)
  const unserve = serve(server, path)
  return {
    path,
    close: () => {
      server.off('upgrade', onUpgrade)
      unserve()
      gateway.closeAll(1012, 'service restart')
      wss.close()
    },
  }
}

/**
 * Upgrades to paths that no attachment serves. Node hands every upgrade request to the 'upgrade'
 * listeners, and one that none of them answers holds its socket for good. The first Chorus
 * attachment on a server answers such a request 404 and closes it: at once when only Chorus
 * listens for upgrades there, else after a grace in which another listener may take it (anything
 * written to the socket counts as taken), as engine.io does. Attaching also gives the server the
 * header, request and keep-alive timeouts it lacks (those set to 0 get Node's defaults).
 */
const UNSERVED_GRACE_MS = 1000
/** How long a refused connection may linger while its client reads the answer. */
const LINGER_MS = 2000
const servedPaths = new WeakMap<HttpServer | HttpsServer, string[]>()

function serve(server: HttpServer | HttpsServer, path: string): () => void {
  const paths = servedPaths.get(server) ?? []
  servedPaths.set(server, paths)
  paths.push(path)
  if (!server.headersTimeout) server.headersTimeout = Math.min(60_000, server.requestTimeout || 60_000)
  if (!server.requestTimeout) server.requestTimeout = 300_000
  if (!server.keepAliveTimeout) server.keepAliveTimeout = 5000
  return () => {
    const i = paths.indexOf(path)
    if (i >= 0) paths.splice(i, 1)
  }
}

function refuseUnserved(server: HttpServer | HttpsServer, socket: Duplex, pathname: string, path: string): void {
  const paths = servedPaths.get(server) ?? []
  if (paths.includes(pathname) || paths[0] !== path) return // another attachment serves it, or answers for all
  const refuse = () => {
    const s = socket as Socket
    if (s.destroyed || !s.writable || s.bytesWritten > 0) return // another listener took it
    s.on('error', () => undefined)
    s.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
    s.resume() // discard what the client still sends, and see it close
    setTimeout(() => s.destroy(), LINGER_MS).unref()
  }
  if (server.listenerCount('upgrade') <= paths.length) refuse()
  else setTimeout(refuse, UNSERVED_GRACE_MS).unref()
}
