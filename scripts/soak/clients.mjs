// The load process of the soak: holds STOMP connections (@stomp/stompjs over ws, heart-beats on)
// spread over the instances, each subscribed to /topic/soak/all and to one room; sends to the rooms
// at a pace (through the gateway, so every SEND fans out to the room's subscribers on every
// instance); replaces connections at a pace (churn); and counts, per `sample`, deliveries, sends,
// errors and the send→deliver latency.
import { Client } from '@stomp/stompjs'
import { WebSocket } from 'ws'
import { quantile, serveParent, sleep } from '../../bench/lib/harness.mjs'

const clients = new Set()
let urls = []
let rooms = 20
let nextId = 0
let traffic = null
let churn = null
const counts = () => ({ delivered: 0, sent: 0, sendFailed: 0, errors: 0, closes: 0, opened: 0, replaced: 0, latencies: [] })
let window = counts()
const errorSamples = []

function noteError(what) {
  window.errors++
  if (errorSamples.length < 20) errorSamples.push(`${new Date().toISOString()} ${what}`)
}

/** Opens one client on instance `id % urls.length`; resolves once both subscriptions are confirmed. */
function open(id) {
  const url = urls[id % urls.length]
  const room = `/topic/soak/room-${id % rooms}`
  return new Promise((resolve, reject) => {
    const entry = { client: null, room, closing: false }
    const client = new Client({
      webSocketFactory: () => new WebSocket(url, ['v12.stomp'], { perMessageDeflate: false }),
      connectHeaders: { login: `soak-user-${id}` },
      reconnectDelay: 0,
      heartbeatIncoming: 10_000,
      heartbeatOutgoing: 10_000,
      debug: () => undefined,
    })
    entry.client = client
    const timer = setTimeout(() => fail(new Error(`no receipts from ${url} within 30 s`)), 30_000)
    let settled = false
    const fail = (err) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      void client.deactivate()
      reject(err)
    }
    const onMessage = (m) => {
      window.delivered++
      const sent = Number(m.body.slice(m.body.indexOf('|') + 1))
      if (sent > 0 && window.latencies.length < 200_000) window.latencies.push(Date.now() - sent)
    }
    client.onStompError = (frame) => noteError(`STOMP ERROR on ${url}: ${frame.headers.message}`)
    client.onWebSocketError = () => (settled ? noteError(`WebSocket error on ${url}`) : fail(new Error(`WebSocket error on ${url}`)))
    client.onWebSocketClose = (evt) => {
      window.closes++
      if (!entry.closing) {
        clients.delete(entry)
        if (settled) noteError(`connection to ${url} closed by the server (${evt?.code ?? '?'})`)
        else fail(new Error(`connection to ${url} closed (${evt?.code ?? '?'}) before its receipts`))
      }
    }
    client.onConnect = () => {
      let receipts = 0
      const receipt = () => {
        if (++receipts < 2 || settled) return
        settled = true
        clearTimeout(timer)
        clients.add(entry)
        window.opened++
        resolve(entry)
      }
      client.watchForReceipt(`all-${id}`, receipt)
      client.watchForReceipt(`room-${id}`, receipt)
      client.subscribe('/topic/soak/all', onMessage, { receipt: `all-${id}` })
      client.subscribe(room, onMessage, { receipt: `room-${id}` })
    }
    client.activate()
  })
}

async function close(entry) {
  entry.closing = true
  clients.delete(entry)
  await entry.client.deactivate()
}

const pick = () => {
  const i = Math.floor(Math.random() * clients.size)
  let k = 0
  for (const c of clients) if (k++ === i) return c
  return null
}

serveParent({
  /** Opens `count` clients over `urls`, `parallel` at a time, numbered from `firstId`. */
  async connect(msg) {
    urls = msg.urls
    rooms = msg.rooms
    // Ids (and so logins) are unique across load processes.
    nextId = Math.max(nextId, msg.firstId)
    const started = Date.now()
    let failed = 0
    const queue = Array.from({ length: msg.count }, () => nextId++)
    await Promise.all(
      Array.from({ length: msg.parallel }, async () => {
        while (queue.length > 0) {
          const id = queue.shift()
          await open(id).catch((err) => {
            failed++
            noteError(`connect: ${err.message}`)
          })
        }
      }),
    )
    return { connected: clients.size, failed, ms: Date.now() - started }
  },

  /** Sends `rate` messages a second to the rooms (from random clients) and replaces `churn` clients a second. */
  async start(msg) {
    if (msg.rate > 0) {
      traffic = setInterval(() => {
        const c = pick()
        if (!c || !c.client.connected) return
        try {
          c.client.publish({ destination: c.room, body: `x|${Date.now()}` })
          window.sent++
        } catch {
          window.sendFailed++
        }
      }, 1000 / msg.rate)
    }
    if (msg.churn > 0) {
      churn = setInterval(() => {
        const c = pick()
        if (!c) return
        void close(c).then(() =>
          open(nextId++).then(
            () => window.replaced++,
            (err) => noteError(`reconnect: ${err.message}`),
          ),
        )
      }, 1000 / msg.churn)
    }
    return {}
  },

  /** What happened since the previous sample. */
  async sample() {
    const w = window
    window = counts()
    const sorted = w.latencies.sort((a, b) => a - b)
    const { latencies: _, ...rest } = w
    return { ...rest, connected: clients.size, latencyP50: quantile(sorted, 0.5), latencyP99: quantile(sorted, 0.99), errorSamples: errorSamples.splice(0) }
  },

  /** Stops the traffic and closes every client. */
  async stop() {
    clearInterval(traffic)
    clearInterval(churn)
    await Promise.all([...clients].map((c) => close(c).catch(() => undefined)))
    await sleep(200)
    setImmediate(() => process.exit(0))
    return {}
  },
})
process.send?.({ type: 'ready' })
