// A load process of the fan-out benchmark: it holds WebSocket subscribers for every system
// (`connect` opens them, spread round-robin over that system's instances) and measures what
// reaches them: per step (`step` … `collect`), deliveries, losses, duplicates and reorderings per
// subscriber, and the publish→deliver latency of every delivery in a histogram (2 % buckets),
// from the send time carried in each message body (same machine, so the clocks agree).
//
// Chorus subscribers speak STOMP 1.2 either with a minimal client written here over `ws` (`raw`,
// the default: CONNECT, SUBSCRIBE with a receipt, and a MESSAGE parser that splits the command,
// the headers and the body) or with @stomp/stompjs (`stompjs`). socket.io subscribers use
// socket.io-client over WebSocket only and join the benchmark room.
import { Client as StompClient } from '@stomp/stompjs'
import { io as ioClient } from 'socket.io-client'
import { WebSocket } from 'ws'
import { now, serveParent, sleep } from '../lib/harness.mjs'

const TOPIC = '/topic/bench'
const EVENT = 'm'
const ROOM = 'bench'

// ---- latency histogram ----------------------------------------------------------------------

const BASE = 1.02
const BUCKETS = 1200 // 1 µs · 1.02^1199 ≈ 20 000 s
const LOG_BASE = Math.log(BASE)

/** Bucket of a latency in ms: 0 below 1 µs, else 1 + ⌊log_1.02(µs)⌋. */
function bucketOf(ms) {
  const us = ms * 1000
  if (!(us >= 1)) return 0
  return Math.min(BUCKETS - 1, 1 + Math.floor(Math.log(us) / LOG_BASE))
}

// ---- measurement state --------------------------------------------------------------------

/** One system's subscribers in this process and what the current step saw. */
class Group {
  subscribers = [] // { last: number, seen: Uint8Array } per subscriber
  closers = []
  from = 0
  to = 0
  received = 0 // distinct (subscriber, message) deliveries within the step's range
  duplicates = 0 // a message a subscriber had already received
  reordered = 0 // a message that arrived after a later one of the same publisher
  stray = 0 // messages outside the step (late ones from an earlier step)
  firstRecv = Infinity
  lastRecv = 0
  hist = new Uint32Array(BUCKETS)
  // The step's first and last thirds (by sequence number): a queue that grows shows as a later third
  // slower than the first.
  first = new Uint32Array(BUCKETS)
  last = new Uint32Array(BUCKETS)

  reset(from, to) {
    this.from = from
    this.to = to
    this.received = 0
    this.duplicates = 0
    this.reordered = 0
    this.stray = 0
    this.firstRecv = Infinity
    this.lastRecv = 0
    this.hist = new Uint32Array(BUCKETS)
    this.first = new Uint32Array(BUCKETS)
    this.last = new Uint32Array(BUCKETS)
    for (const s of this.subscribers) {
      s.last = from - 1
      s.seen = new Uint8Array(to - from)
    }
  }

  /** Records one delivered body `<seq>|<send time>|…` for subscriber `s`. */
  onBody(s, body) {
    const t = now()
    const bar = body.indexOf('|')
    const seq = Number(body.slice(0, bar))
    if (!(seq >= this.from && seq < this.to) || s.seen === undefined) {
      this.stray++
      return
    }
    if (s.seen[seq - this.from]) {
      this.duplicates++
      return
    }
    s.seen[seq - this.from] = 1
    if (seq < s.last) this.reordered++
    else s.last = seq
    const sent = Number(body.slice(bar + 1, body.indexOf('|', bar + 1)))
    const b = bucketOf(t - sent)
    this.hist[b]++
    const third = Math.floor((3 * (seq - this.from)) / (this.to - this.from))
    if (third === 0) this.first[b]++
    else if (third === 2) this.last[b]++
    this.received++
    if (t < this.firstRecv) this.firstRecv = t
    this.lastRecv = t
  }
}

const groups = new Map()
const group = (system) => {
  if (!groups.has(system)) groups.set(system, new Group())
  return groups.get(system)
}

// ---- subscribers --------------------------------------------------------------------------

/** A minimal STOMP 1.2 subscriber over `ws`; resolves once the SUBSCRIBE's receipt arrived. */
function rawStomp(url, g) {
  return new Promise((resolve, reject) => {
    const s = { last: -1, seen: undefined }
    const ws = new WebSocket(url, ['v12.stomp'], { perMessageDeflate: false })
    const timer = setTimeout(() => fail(new Error(`no receipt from ${url} within 30 s`)), 30_000)
    const fail = (err) => {
      clearTimeout(timer)
      ws.terminate()
      reject(err)
    }
    ws.on('error', fail)
    ws.on('open', () => ws.send('CONNECT\naccept-version:1.2\nhost:127.0.0.1\nheart-beat:0,0\n\n\0'))
    ws.on('message', (data) => {
      const frame = parseFrame(data.toString())
      if (frame === null) return // heart-beat
      switch (frame.command) {
        case 'MESSAGE':
          if (frame.headers.subscription === '0') g.onBody(s, frame.body)
          return
        case 'CONNECTED':
          ws.send(`SUBSCRIBE\nid:0\ndestination:${TOPIC}\nack:auto\nreceipt:sub-0\n\n\0`)
          return
        case 'RECEIPT':
          clearTimeout(timer)
          g.subscribers.push(s)
          g.closers.push(() => ws.terminate())
          resolve()
          return
        default:
          fail(new Error(`${frame.command}: ${frame.headers.message ?? frame.body}`))
      }
    })
  })
}

/** Command, headers (first occurrence wins; escapes are not expected here) and body of one frame. */
function parseFrame(text) {
  const eol = text.indexOf('\n')
  if (eol <= 0) return null
  const command = text.slice(0, eol)
  const end = text.indexOf('\n\n', eol)
  const headers = {}
  let at = eol + 1
  while (at < end) {
    const next = text.indexOf('\n', at)
    const colon = text.indexOf(':', at)
    const name = text.slice(at, colon)
    if (!(name in headers)) headers[name] = text.slice(colon + 1, next)
    at = next + 1
  }
  const length = headers['content-length']
  const body = length === undefined ? text.slice(end + 2, text.indexOf('\0', end + 2)) : text.slice(end + 2, text.length - 1)
  return { command, headers, body }
}

/** A @stomp/stompjs subscriber; resolves once the SUBSCRIBE's receipt arrived. */
function stompjs(url, g) {
  return new Promise((resolve, reject) => {
    const s = { last: -1, seen: undefined }
    const client = new StompClient({
      webSocketFactory: () => new WebSocket(url, ['v12.stomp'], { perMessageDeflate: false }),
      reconnectDelay: 0,
      heartbeatIncoming: 0,
      heartbeatOutgoing: 0,
      debug: () => undefined,
    })
    const timer = setTimeout(() => {
      void client.deactivate()
      reject(new Error(`no receipt from ${url} within 30 s`))
    }, 30_000)
    client.onStompError = (frame) => reject(new Error(frame.headers.message))
    client.onWebSocketError = () => reject(new Error(`WebSocket error on ${url}`))
    client.onConnect = () => {
      client.watchForReceipt('sub-0', () => {
        clearTimeout(timer)
        g.subscribers.push(s)
        g.closers.push(() => client.forceDisconnect())
        resolve()
      })
      client.subscribe(TOPIC, (m) => g.onBody(s, m.body), { receipt: 'sub-0' })
    }
    client.activate()
  })
}

/** A socket.io-client subscriber over WebSocket only; resolves once it joined the room. */
function socketio(url, g) {
  return new Promise((resolve, reject) => {
    const s = { last: -1, seen: undefined }
    const socket = ioClient(url, { transports: ['websocket'], reconnection: false, forceNew: true, timeout: 30_000 })
    socket.on(EVENT, (body) => g.onBody(s, body))
    socket.on('connect_error', reject)
    socket.on('connect', () => {
      socket.timeout(30_000).emit('subscribe', ROOM, (err) => {
        if (err) return reject(err)
        g.subscribers.push(s)
        g.closers.push(() => socket.disconnect())
        resolve()
      })
    })
  })
}

// ---- commands ----------------------------------------------------------------------------

serveParent({
  /** Opens `count` subscribers of `system`, subscriber k on `urls[(offset + k) % urls.length]`, at most 50 connecting at once. */
  async connect({ system, urls, count, offset, stompClient }) {
    const g = group(system)
    const open = system.startsWith('chorus') ? (stompClient === 'stompjs' ? stompjs : rawStomp) : socketio
    let next = 0
    const worker = async () => {
      while (next < count) {
        const k = next++
        await open(urls[(offset + k) % urls.length], g)
      }
    }
    await Promise.all(Array.from({ length: Math.min(50, count) }, worker))
    return { subscribers: g.subscribers.length }
  },

  /** Starts a step: messages from..to-1 are expected by every subscriber of `system`. */
  async step({ system, from, to }) {
    group(system).reset(from, to)
    return { cpuUs: cpuUs() }
  },

  async collect({ system }) {
    const g = group(system)
    return {
      subscribers: g.subscribers.length,
      received: g.received,
      duplicates: g.duplicates,
      reordered: g.reordered,
      stray: g.stray,
      firstRecv: g.firstRecv,
      lastRecv: g.lastRecv,
      hist: g.hist,
      first: g.first,
      last: g.last,
      cpuUs: cpuUs(),
    }
  },

  async stop() {
    for (const g of groups.values()) for (const close of g.closers) close()
    await sleep(100)
    setImmediate(() => process.exit(0))
    return {}
  },
})

function cpuUs() {
  const d = process.cpuUsage()
  return d.user + d.system
}

process.send?.({ type: 'ready' })
