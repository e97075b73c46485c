// STOMP clients for tests: the real @stomp/stompjs client over the real `ws` WebSocket, and a raw
// WebSocket for sending deliberately malformed frames.
import { Client, type IFrame, type IMessage, type StompHeaders } from '@stomp/stompjs'
import { WebSocket } from 'ws'

export interface TestClient {
  readonly client: Client
  readonly errors: IFrame[]
  readonly closes: number[]
  subscribe(destination: string, headers?: StompHeaders): IMessage[]
  close(): Promise<void>
}

export async function connectStomp(url: string, opts: { connectHeaders?: StompHeaders; heartbeatMs?: number; reconnectDelay?: number } = {}): Promise<TestClient> {
  const errors: IFrame[] = []
  const closes: number[] = []
  const client = new Client({
    webSocketFactory: () => new WebSocket(url, ['v12.stomp', 'v11.stomp']) as unknown as globalThis.WebSocket,
    connectHeaders: opts.connectHeaders ?? {},
    heartbeatIncoming: opts.heartbeatMs ?? 0,
    heartbeatOutgoing: opts.heartbeatMs ?? 0,
    reconnectDelay: opts.reconnectDelay ?? 0,
    debug: () => undefined,
  })
  client.onStompError = (f) => errors.push(f)
  client.onWebSocketClose = (e: { code: number }) => closes.push(e.code)
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no CONNECTED from ${url}`)), 10_000)
    client.onConnect = () => {
      clearTimeout(timer)
      resolve()
    }
    client.activate()
  })
  return {
    client,
    errors,
    closes,
    subscribe(destination, headers = {}) {
      const got: IMessage[] = []
      client.subscribe(destination, (m) => got.push(m), headers)
      return got
    },
    async close() {
      await client.deactivate()
    },
  }
}

/** Sends raw text frames over a plain WebSocket; collects what comes back. */
export async function rawSocket(url: string): Promise<{ ws: WebSocket; received: string[]; closed: Promise<number>; send(text: string | Buffer): void }> {
  const ws = new WebSocket(url, ['v12.stomp'])
  const received: string[] = []
  ws.on('message', (d: Buffer) => received.push(d.toString()))
  const closed = new Promise<number>((resolve) => ws.on('close', (code: number) => resolve(code)))
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('error', reject)
  })
  return { ws, received, closed, send: (text) => ws.send(text) }
}

export async function until(check: () => boolean, ms = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}
