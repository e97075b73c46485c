/**
 * The dashboard's one credential check, shared by its server and by routes mounted into it (the
 * config routes): which credentials a route takes (session cookie, API token, HTTP Basic), the
 * per-client throttle on presented credentials (a wrong one counts, a right one clears), and the
 * extra proof an action needs (POST from this origin with the session's X-CSRF-Token; a bearer
 * token is never added by a browser on its own).
 */
import type { IncomingMessage } from 'node:http'
import { ChorusError } from '../errors.js'
import { sameOrigin, type Access, type Credential, type Refusal } from './auth.js'
import { clientAddress } from './http.js'
import type { Throttle } from './throttle.js'

/** Which credentials a route takes. */
export type Accept = { session?: boolean; bearer?: boolean; basic?: boolean }
export const PAGE: Accept = { session: true }
export const API: Accept = { session: true, bearer: true, basic: true }
export const ACTION: Accept = { session: true, bearer: true }
export const MACHINE: Accept = { bearer: true, basic: true, session: true }
export const EUREKA: Accept = { basic: true, bearer: true }

/** Credential checks for a route handler. */
export interface Guard {
  /** The request's credential, or why there is none; throws `CHORUS_ERR_DASHBOARD_THROTTLED` while the client waits. */
  authenticate(req: IncomingMessage, accept: Accept): Promise<Credential | Refusal>
  /** Any credential `accept` takes; throws `CHORUS_ERR_DASHBOARD_UNAUTHORIZED` (or `…_THROTTLED`). */
  require(req: IncomingMessage, accept: Accept): Promise<Credential>
  /** Any credential the JSON API takes. */
  read(req: IncomingMessage): Promise<Credential>
  /** An action: a bearer token, or a session from this origin with its CSRF token; throws `…_CROSS_SITE` otherwise. */
  action(req: IncomingMessage): Promise<Credential>
}

/** The dashboard's credential checks, from its `Access` and `Throttle`. */
export function accessGuard(access: Access, throttle: Throttle): Guard {
  const guard: Guard = {
    async authenticate(req, accept) {
      const client = clientAddress(req)
      if (req.headers.authorization !== undefined) {
        const wait = throttle.retryAfterSec(client)
        if (wait > 0) throw throttled(wait)
      }
      const result = await access.authenticate(req, accept)
      if ('via' in result) {
        if (result.via !== 'session') throttle.success(client)
        return result
      }
      if (result.bad) throttle.failure(client)
      return result
    },
    async require(req, accept) {
      const cred = await guard.authenticate(req, accept)
      if (!('via' in cred)) throw new ChorusError('CHORUS_ERR_DASHBOARD_UNAUTHORIZED', [cred.why ? `${cred.why}; ${describe(accept)}` : describe(accept)])
      return cred
    },
    read: (req) => guard.require(req, API),
    async action(req) {
      const cred = await guard.require(req, ACTION)
      const origin = sameOrigin(req, cred.via !== 'session')
      if (!origin.ok) throw new ChorusError('CHORUS_ERR_DASHBOARD_CROSS_SITE', [origin.why])
      const csrf = req.headers['x-csrf-token']
      if (cred.via === 'session' && !access.checkCsrf(cred.session, Array.isArray(csrf) ? csrf[0] : csrf)) {
        throw new ChorusError('CHORUS_ERR_DASHBOARD_CROSS_SITE', ['missing or wrong X-CSRF-Token'])
      }
      return cred
    },
  }
  return guard
}

export function throttled(retryAfterSec: number): ChorusError {
  return new ChorusError('CHORUS_ERR_DASHBOARD_THROTTLED', [retryAfterSec], { details: { retryAfterSec } })
}

function describe(accept: Accept): string {
  const ways = [accept.session && 'sign in', accept.bearer && 'send Authorization: Bearer <token>', accept.basic && 'use HTTP Basic with the dashboard password'].filter(Boolean)
  return ways.join(', or ')
}
