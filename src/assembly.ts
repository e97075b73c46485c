/**
 * The one assembly point: from resolved settings to a database handle and a started bus. Every
 * process that talks to the cluster builds its foundation here — an instance (`createCluster`), and
 * the processes that watch without joining (balancer, dashboard, `chorus nginx --watch`) — so
 * connection settings, migrations and bus limits are decided once.
 *
 * Order: embedded PostgreSQL (only when no URL is given), connections, migrations on a session
 * connection, the transport (option `transport`, else the one `bus.url` names, by default PostgreSQL
 * LISTEN/NOTIFY),
 * the bus. A failure at any step closes what the earlier steps opened, and rethrows.
 */
import type { Logger } from 'pino'
import { Bus } from './bus/bus.js'
import { createTransport } from './bus/select.js'
import type { Transport } from './bus/transport.js'
import { connect, type Db } from './db/connect.js'
import { findEmbedded, startEmbeddedPostgres, type EmbeddedPostgres } from './db/embedded.js'
import { migrate } from './db/migrate.js'
import type { Events } from './events.js'
import { busDefaults } from './options.js'

export interface FoundationSettings {
  /** Names this process on the bus and in `application_name`. */
  readonly instanceId: string
  /** null: use (or start) the embedded PostgreSQL under `embedded.dataDir`. */
  readonly databaseUrl: string | null
  readonly directUrl: string | null
  readonly schema: string
  readonly poolSize: number
  /** Apply pending migrations (under the advisory lock every process takes). */
  readonly migrate: boolean
  readonly embedded?: { readonly dataDir: string; readonly port: number }
  readonly bus?: {
    /** Which transport carries the bus (see src/bus/select.ts); null: PostgreSQL LISTEN/NOTIFY on `directUrl`; absent: env `CHORUS_BUS_URL`, else PostgreSQL. */
    readonly url?: string | null
    readonly maxPayloadBytes?: number
    readonly maxQueueBytes?: number
    readonly payloadRetentionMs?: number
  }
  /** A ready-made bus transport; wins over `bus.url`. */
  readonly transport?: Transport | null
  readonly log: Logger
  readonly events: Events
}

export interface Foundation {
  readonly db: Db
  readonly bus: Bus
  /** The embedded PostgreSQL this process started, if it did. */
  readonly embedded: EmbeddedPostgres | null
  /** Closes the bus, then the connections, then the embedded PostgreSQL. */
  close(): Promise<void>
}

export async function assemble(settings: FoundationSettings): Promise<Foundation> {
  const { log, events } = settings
  let embedded: EmbeddedPostgres | null = null
  let db: Db | null = null
  let bus: Bus | null = null
  try {
    let url = settings.databaseUrl
    if (!url) {
      if (!settings.embedded) throw new Error('no database URL and no embedded PostgreSQL settings')
      url = await findEmbedded(settings.embedded.dataDir)
      if (!url) {
        log.info({ dataDir: settings.embedded.dataDir }, 'no DATABASE_URL: starting the embedded PostgreSQL')
        embedded = await startEmbeddedPostgres({ dataDir: settings.embedded.dataDir, port: settings.embedded.port })
        url = embedded.url
      }
    }
    db = await connect({ url, directUrl: settings.directUrl, schema: settings.schema, instanceId: settings.instanceId, poolSize: settings.poolSize })
    if (settings.migrate) {
      // On the direct URL: migrations take an advisory lock and run multi-statement scripts.
      const session = db.openSession('migrate', 1)
      const result = await migrate(session, settings.schema, settings.instanceId).finally(() => session.end({ timeout: 1 }).catch(() => undefined))
      for (const m of result.applied) {
        log.info({ version: m.version, name: m.name }, 'applied migration')
        events.emit('db:migration:applied', { version: m.version, name: m.name })
      }
    }
    const limits = { ...busDefaults, ...settings.bus }
    // Watchers (balancer, dashboard, CLI) pass no bus URL and follow the environment, so they hear
    // the instances wherever the instances talk; createCluster passes its resolved one (or null).
    const busUrl = settings.bus?.url === undefined ? process.env.CHORUS_BUS_URL || undefined : (settings.bus.url ?? undefined)
    const transport = createTransport(settings.transport ?? { url: busUrl }, {
      db,
      log,
      prefix: settings.schema,
      payloadRetentionMs: limits.payloadRetentionMs,
      maxPayloadBytes: limits.maxPayloadBytes,
      maxQueueBytes: limits.maxQueueBytes,
    })
    bus = new Bus(transport, { instanceId: settings.instanceId, maxPayloadBytes: limits.maxPayloadBytes, maxQueueBytes: limits.maxQueueBytes, events, log })
    await bus.start()
    const parts = { db, bus, embedded }
    return {
      ...parts,
      async close() {
        await parts.bus.close().catch((err: unknown) => log.warn({ err }, 'the bus did not close cleanly'))
        await parts.db.close()
        await parts.embedded?.stop()
      },
    }
  } catch (err) {
    await bus?.close().catch(() => undefined)
    await db?.close().catch(() => undefined)
    await embedded?.stop().catch(() => undefined)
    throw err
  }
}
