/**
 * The dashboard's read-only JSON API (`GET /api/<panel>`), a route behind every panel of the page,
 * and the live stream (`GET /api/stream`, SSE). The caller has checked the credential.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { ChorusError } from '../errors.js'
import { ownerOf, type Access, type Credential, type TokenRecord } from './auth.js'
import { sendJson } from './http.js'
import { frame, type EventStream } from './sse.js'
import type { ClusterView } from './view.js'

export interface ReadContext {
  readonly access: Access
  readonly view: ClusterView
  readonly stream: EventStream
}

export async function answerRead(ctx: ReadContext, req: IncomingMessage, res: ServerResponse, parts: readonly string[], cred: Credential): Promise<void> {
  const [head, id] = parts
  if (id !== undefined) throw new ChorusError('CHORUS_ERR_DASHBOARD_NOT_FOUND', [`/api/${parts.join('/')}`])
  const view = ctx.view
  const s = view.snapshot
  switch (head) {
    case 'session': {
      const startup = await ctx.access.startupToken()
      return sendJson(res, 200, {
        via: cred.via,
        csrf: cred.via === 'session' ? ctx.access.csrfToken(cred.session) : null,
        expiresAt: cred.via === 'session' ? iso(cred.session.expiresAt) : cred.via === 'bearer' ? iso(cred.token.expiresAt) : null,
        token: startup.token,
        tokenExpiresAt: iso(startup.record.expiresAt),
      })
    }
    case 'tokens': {
      const current = cred.via === 'bearer' ? cred.token.id : null
      return sendJson(res, 200, { tokens: (await ctx.access.tokens()).map((t) => tokenJson(t, current)) })
    }
    case 'overview':
      return sendJson(res, 200, s)
    case 'instances':
      return sendJson(res, 200, { at: s.at, counts: s.counts, instances: s.instances })
    case 'events':
      return sendJson(res, 200, { events: view.events })
    case 'locks':
      return sendJson(res, 200, s.locks ?? { held: 0, exclusive: 0, shared: 0, waiters: 0, leases: [] })
    case 'jobs':
      return sendJson(res, 200, s.jobs ?? { jobs: [], singletons: [], cron: [], failures: [] })
    case 'bus':
      return sendJson(res, 200, {
        ...s.bus,
        instances: s.instances.filter((i) => i.figures && i.status !== 'down').map((i) => ({ id: i.id, publishedPerSec: i.figures!.busPublishedPerSec, deliveredPerSec: i.figures!.busDeliveredPerSec, gaps: i.figures!.busGaps })),
      })
    case 'caches':
      return sendJson(res, 200, { caches: s.caches })
    case 'realtime':
      return sendJson(res, 200, {
        ...s.realtime,
        instances: s.instances.filter((i) => i.figures && i.status !== 'down').map((i) => ({ id: i.id, sessions: i.figures!.sessions, deliveredPerSec: i.figures!.realtimeDeliveredPerSec, publishedPerSec: i.figures!.realtimePublishedPerSec })),
      })
    case 'history':
      return sendJson(res, 200, s.series)
    case 'stream': {
      const expiresAt = cred.via === 'session' ? cred.session.expiresAt : cred.via === 'bearer' ? cred.token.expiresAt : Number.POSITIVE_INFINITY
      const opened = ctx.stream.open(req, res, [frame('member-events', view.events), frame('snapshot', s)], expiresAt, ownerOf(cred))
      if (!opened) sendJson(res, 503, { error: { code: 'CHORUS_ERR_DASHBOARD_BAD_REQUEST', message: 'too many open streams' } })
      return
    }
    default:
      throw new ChorusError('CHORUS_ERR_DASHBOARD_NOT_FOUND', [`/api/${parts.join('/')}`])
  }
}

export function iso(ms: number): string {
  return new Date(ms).toISOString()
}

export function tokenJson(t: TokenRecord, current: string | null) {
  return { id: t.id, name: t.name, createdAt: iso(t.createdAt), expiresAt: iso(t.expiresAt), current: t.id === current }
}
