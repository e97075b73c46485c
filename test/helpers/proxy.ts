// A TCP proxy in front of the test PostgreSQL, to cut one instance off the database the way a
// network does: `hang()` keeps every socket open but lets no byte through (queries and new
// connections hang), `heal()` resets the hung sockets (as a timeout eventually would) and passes
// traffic again. `refuse()` acts as a stopped database: every socket is cut and new connections
// are closed at once, until `heal()`.
import { connect, createServer, type Server, type Socket } from 'node:net'

export interface Proxy {
  /** The database URL, pointing at the proxy. */
  readonly url: string
  hang(): void
  refuse(): void
  heal(): void
  close(): Promise<void>
}

export async function startProxy(databaseUrl: string): Promise<Proxy> {
  const target = new URL(databaseUrl)
  const pairs = new Set<[Socket, Socket]>()
  let hung = false
  let refusing = false

  const server: Server = createServer((client) => {
    if (refusing) {
      client.destroy()
      return
    }
    const upstream = connect(Number(target.port), target.hostname)
    const pair: [Socket, Socket] = [client, upstream]
    pairs.add(pair)
    const forward = (from: Socket, to: Socket) =>
      from.on('data', (chunk) => {
        if (!hung) to.write(chunk)
      })
    forward(client, upstream)
    forward(upstream, client)
    const end = () => {
      pairs.delete(pair)
      client.destroy()
      upstream.destroy()
    }
    client.on('close', end).on('error', end)
    upstream.on('close', end).on('error', end)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = new URL(databaseUrl)
  url.host = `127.0.0.1:${(server.address() as { port: number }).port}`

  return {
    url: url.toString(),
    hang() {
      hung = true
    },
    refuse() {
      refusing = true
      for (const [client, upstream] of pairs) {
        client.destroy()
        upstream.destroy()
      }
      pairs.clear()
    },
    heal() {
      // Sockets that lost bytes while hung are out of step with the server: reset them.
      for (const [client, upstream] of pairs) {
        client.destroy()
        upstream.destroy()
      }
      pairs.clear()
      hung = false
      refusing = false
    },
    async close() {
      for (const [client, upstream] of pairs) {
        client.destroy()
        upstream.destroy()
      }
      await new Promise((r) => server.close(r))
    },
  }
}
