// One instance of the fan-out benchmark, for one system (argv[2]): `chorus` (a cluster member
// serving STOMP over WebSocket with cluster.realtime; `chorus-redis` and `chorus-nats` the same with
// the bus on Redis or NATS, BENCH_BUS_URL), `redis` (socket.io 4 with
// @socket.io/redis-adapter) or `postgres` (socket.io 4 with @socket.io/postgres-adapter). It listens
// on 127.0.0.1 on a free port and, when asked (`publish`), is the one publisher: it broadcasts
// paced messages to every subscriber on every instance of its system.
//
// Environment: DATABASE_URL, BENCH_INDEX (0, 1, 2 …), REDIS_PORT and BENCH_REDIS_CLIENT (for `redis`),
// BENCH_CHORUS_DIST (for `chorus…`: the dist/ directory of the build to measure; default this repository's),
// BENCH_BUS_URL (for `chorus-redis`, `chorus-nats`: the bus transport's URL).
import { createServer } from 'node:http'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { now, serveParent, sleep } from '../lib/harness.mjs'

const system = process.argv[2]
const index = Number(process.env.BENCH_INDEX ?? 0)
const TOPIC = '/topic/bench'
const EVENT = 'm'
const ROOM = 'bench'

const server = createServer((_req, res) => res.writeHead(404).end())
let broadcast // (body) => void | Promise — one message to every subscriber of the system
let close = async () => undefined

// A socket.io adapter's client may fail a request under load (node-redis: TimeoutError) by throwing
// from a timer; an instance that died of it would end the whole run. Counted and reported instead.
let uncaught = 0
process.on('uncaughtException', (err) => {
  if (uncaught++ < 3) process.stderr.write(`${system} instance ${index}: ${err?.stack ?? err}\n`)
})
process.on('unhandledRejection', (err) => {
  if (uncaught++ < 3) process.stderr.write(`${system} instance ${index}: ${err?.stack ?? err}\n`)
})

if (system.startsWith('chorus')) {
  // BENCH_CHORUS_DIST: another build of Chorus to measure (its dist/ directory), e.g. before a change.
  const dist = process.env.BENCH_CHORUS_DIST ? pathToFileURL(join(resolve(process.env.BENCH_CHORUS_DIST), 'index.js')).href : '../../dist/index.js'
  const { createCluster } = await import(dist)
  // One cluster per system on the one database: each in its own schema (its own members, log and ids).
  const own = system === 'chorus' ? {} : { bus: { url: process.env.BENCH_BUS_URL }, schema: system.replace('-', '_') }
  const cluster = await createCluster({ databaseUrl: process.env.DATABASE_URL, instanceId: `fanout-${index}`, preset: 'local', logLevel: 'error', ...own })
  // Anyone may subscribe to the benchmark topic; no STOMP heart-beats (socket.io's pings are 25 s apart).
  cluster.realtime.attach(server, { authorize: (_p, action, dest) => action === 'subscribe' && dest === TOPIC, heartbeat: { send: 0, receive: 0 } })
  broadcast = (body) => cluster.realtime.publish(TOPIC, body)
  close = () => cluster.close()
} else if (system === 'redis' || system === 'postgres') {
  const { Server } = await import('socket.io')
  const io = new Server(server, { transports: ['websocket'], serveClient: false })
  if (system === 'redis') {
    const { createAdapter } = await import('@socket.io/redis-adapter')
    let pub, sub
    if (process.env.BENCH_REDIS_CLIENT === 'ioredis') {
      const { default: Redis } = await import('ioredis')
      pub = new Redis({ host: '127.0.0.1', port: Number(process.env.REDIS_PORT), lazyConnect: true })
      sub = pub.duplicate()
    } else {
      const { createClient } = await import('redis')
      pub = createClient({ url: `redis://127.0.0.1:${process.env.REDIS_PORT}` })
      sub = pub.duplicate()
    }
    pub.on('error', () => undefined)
    sub.on('error', () => undefined)
    await Promise.all([pub.connect(), sub.connect()])
    io.adapter(createAdapter(pub, sub))
    close = async () => {
      io.close()
      await Promise.allSettled([pub.quit(), sub.quit()])
    }
  } else {
    const { default: pg } = await import('pg')
    const { createAdapter } = await import('@socket.io/postgres-adapter')
    const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 10 })
    pool.on('error', () => undefined)
    // The adapter's table for large payloads. Three instances create it at once, and concurrent
    // `create table if not exists` can collide in the catalog: the loser tries again.
    for (let attempt = 0; ; attempt++) {
      try {
        await pool.query(`create table if not exists socket_io_attachments (id bigserial unique, created_at timestamptz default now(), payload bytea)`)
        break
      } catch (err) {
        if (attempt >= 5) throw err
        await sleep(100)
      }
    }
    io.adapter(createAdapter(pool))
    close = async () => {
      io.close()
      await pool.end().catch(() => undefined)
    }
  }
  // Subscribing is joining a room, as a topic subscription would be; the publisher emits to the room.
  io.on('connection', (socket) => {
    socket.on('subscribe', (room, ack) => {
      if (room !== ROOM) return
      socket.join(room)
      if (typeof ack === 'function') ack()
    })
  })
  broadcast = (body) => void io.to(ROOM).emit(EVENT, body)
} else {
  throw new Error(`unknown system ${system}`)
}

await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))

/** `<seq>|<send time, ms>|xxxx…` padded to `size` bytes. */
function payload(seq, size) {
  const head = `${seq}|${now().toFixed(3)}|`
  return head + PAD.slice(0, Math.max(0, size - head.length))
}
const PAD = 'x'.repeat(64 * 1024)

serveParent({
  async info() {
    return { port: server.address().port }
  },

  /**
   * Publishes messages from..from+count-1 at `rate` per second, paced open-loop (a late timer tick
   * sends every message already due), and reports how far the sender fell behind and how many
   * publishes failed.
   */
  async publish({ from, count, rate, size }) {
    const cpu = process.cpuUsage()
    const interval = 1000 / rate
    const started = now()
    let failed = 0
    let maxLagMs = 0
    const pending = []
    let i = 0
    while (i < count) {
      const t = now()
      const due = Math.min(count, Math.floor((t - started) / interval) + 1)
      if (i < due) maxLagMs = Math.max(maxLagMs, t - (started + i * interval))
      for (; i < due; i++) {
        try {
          const r = broadcast(payload(from + i, size))
          if (r && typeof r.then === 'function') pending.push(r.catch(() => void failed++))
        } catch {
          failed++
        }
      }
      if (i < count) await sleep(Math.max(0, started + i * interval - now()))
    }
    const ms = now() - started
    await Promise.all(pending)
    const d = process.cpuUsage(cpu)
    return { started, ms, failed, maxLagMs, cpuUs: d.user + d.system }
  },

  async cpu() {
    const d = process.cpuUsage()
    return { cpuUs: d.user + d.system, uncaught }
  },

  async stop() {
    await Promise.race([close(), sleep(3000)])
    setImmediate(() => process.exit(0))
    return {}
  },
})
process.send?.({ type: 'ready', port: server.address().port })
