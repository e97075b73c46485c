import { Client, type IMessage } from '@stomp/stompjs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocket } from 'ws'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { Proc } from '../helpers/proc.js'
import { until } from '../helpers/stomp.js'

const fixture = new URL('../fixtures/realtime-node.mjs', import.meta.url).pathname

describe('realtime across real processes', () => {
  let db: TestDatabase
  const procs: Proc[] = []
  const ports: number[] = []
  beforeAll(async () => {
    db = await testDatabase()
    const env = { DATABASE_URL: db.url, CHORUS_SECRET: 'realtime-e2e-secret-0123456789', CHORUS_PRESET: 'local' }
    for (const id of ['a', 'b', 'c']) procs.push(new Proc(fixture, [], { ...env, CHORUS_INSTANCE_ID: id }))
    for (const p of procs) ports.push((await p.waitFor((l) => l.type === 'ready', 30_000, 'ready')).port as number)
  })
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()))
    await db.drop()
  })

  it('a client whose instance is killed resumes on another with no hole and no duplicate', async () => {
    const [a, , c] = procs as [Proc, Proc, Proc]
    const urls = [ports[2], ports[1]].map((p) => `ws://127.0.0.1:${p}/stomp`)
    let connects = 0
    let lastId: string | undefined
    const got: IMessage[] = []
    const client = new Client({
      webSocketFactory: () => new WebSocket(urls[Math.min(connects, 1)]!, ['v12.stomp']) as unknown as globalThis.WebSocket,
      reconnectDelay: 100,
      heartbeatIncoming: 0,
      heartbeatOutgoing: 0,
      debug: () => undefined,
    })
    client.onConnect = () => {
      connects++
      client.subscribe(
        '/topic/flow',
        (m) => {
          got.push(m)
          if (!m.headers['chorus-gap']) lastId = m.headers['message-id']
        },
        lastId ? { 'chorus-last-id': lastId } : {},
      )
    }
    client.activate()
    await until(() => connects === 1, 10_000, 'first connect')
    await new Promise((r) => setTimeout(r, 200))

    const total = 400
    a.send({ cmd: 'publish', destination: '/topic/flow', count: total, intervalMs: 5 })
    await until(() => got.length >= 80, 20_000, '80 messages before the kill')
    c.kill('SIGKILL')
    const killedAfter = got.length
    await a.waitFor((l) => l.type === 'published', 60_000, 'publishing done')
    await until(() => got.filter((m) => !m.headers['chorus-gap']).length >= total || got.some((m) => m.headers['chorus-gap']), 30_000, 'all messages')
    await client.deactivate()

    const gaps = got.filter((m) => m.headers['chorus-gap'])
    expect(gaps).toEqual([])
    const bodies = got.map((m) => Number(m.body))
    expect(bodies).toEqual([...Array(total).keys()])
    expect(connects).toBe(2)
    console.log(`received ${killedAfter} messages before kill -9 of the client's instance, ${total - killedAfter} after resuming elsewhere; no hole, no duplicate`)
  })

  it('sendToUser from one process reaches both sessions of that user on two others, and no other user', async () => {
    const a = procs[0]!
    const live = [ports[0], ports[1]]
    const sessions = await Promise.all(
      [
        ['alice', live[0]],
        ['alice', live[1]],
        ['bob', live[1]],
      ].map(async ([login, port]) => {
        const got: IMessage[] = []
        const client = new Client({
          webSocketFactory: () => new WebSocket(`ws://127.0.0.1:${port}/stomp`, ['v12.stomp']) as unknown as globalThis.WebSocket,
          connectHeaders: { login: String(login) },
          reconnectDelay: 0,
          debug: () => undefined,
        })
        await new Promise<void>((resolve) => {
          client.onConnect = () => {
            client.subscribe('/user/queue/results', (m) => got.push(m), { receipt: 'ok' })
            client.watchForReceipt('ok', () => resolve())
          }
          client.activate()
        })
        return { client, got }
      }),
    )
    a.send({ cmd: 'sendToUser', user: 'alice', destination: '/user/queue/results', body: 'score 9' })
    await until(() => sessions[0]!.got.length === 1 && sessions[1]!.got.length === 1, 10_000, 'alice sessions')
    await new Promise((r) => setTimeout(r, 200))
    expect(sessions.map((s) => s.got.map((m) => m.body))).toEqual([['score 9'], ['score 9'], []])
    for (const s of sessions) await s.client.deactivate()
  })
})
