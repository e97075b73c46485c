/**
 * The option objects of shared state — maps, topics, reliable topics and their subscriptions —
 * each one strict schema with its type derived from it, parsed with `parseOptions`. A bad option
 * fails with `CHORUS_ERR_OPTIONS_INVALID` naming it (a subscription's `from` with
 * `CHORUS_ERR_STATE_OFFSET_INVALID`), before anything is written or subscribed.
 */
import { z } from 'zod'
import type { Codec } from './codec.js'

const POSITIVE = 'must be a positive integer (or null for no limit where allowed)'
const positive = z.int({ error: POSITIVE }).min(1, { error: POSITIVE })
const codec = z.custom<Codec<any>>(
  (v) => typeof v === 'object' && v !== null && typeof (v as Codec<unknown>).encode === 'function' && typeof (v as Codec<unknown>).decode === 'function',
  { error: 'must be an object with encode and decode functions' },
)
/** Checked where it is used (names and keys keep their own error codes). */
const checkedLater = <T>() => z.custom<T>()

const LIMIT = 'must be an integer from 1 to 10000'
const TTL = 'must be a positive integer number of milliseconds'

export const mapOptions = z.strictObject({
  /** Largest encoded value, in bytes. Default 256 KiB. */
  maxValueBytes: positive.optional(),
  codec: codec.optional(),
})

export const mapWriteOptions = z.strictObject({
  /** The entry expires this long after the write (database time). Default: never. */
  ttlMs: z.int({ error: TTL }).min(1, { error: TTL }).max(2_000_000_000, { error: TTL }).optional(),
})

export const mapEntriesOptions = z.strictObject({
  /** Only keys starting with this. */
  prefix: checkedLater<string>().optional(),
  /** At most this many entries (default 1,000, max 10,000). */
  limit: z.int({ error: LIMIT }).min(1, { error: LIMIT }).max(10_000, { error: LIMIT }).optional(),
})

export const topicOptions = z.strictObject({
  codec: codec.optional(),
  /** Largest encoded message, in bytes; never above the bus's `maxPayloadBytes`. Default: that. */
  maxMessageBytes: positive.optional(),
})

export const reliableTopicOptions = z.strictObject({
  /** Applied by the cluster-wide sweep; the options of the latest publisher win. */
  retention: z
    .strictObject({
      /** Messages older than this are removed (with every message before them). `null`: no age limit. Default: 24 hours. */
      maxAgeMs: positive.nullable().optional(),
      /** At most this many of the newest messages are kept. `null`: no count limit. Default: 100 000. */
      maxCount: positive.nullable().optional(),
    })
    .optional(),
  codec: codec.optional(),
  /** Largest encoded message, in bytes. Default 256 KiB. */
  maxMessageBytes: positive.optional(),
})

export const subscribeOptions = z.strictObject({
  /**
   * Where a subscription without a group, or a group seen for the first time, starts: `'latest'`
   * (messages published from now on; the default), `'earliest'` (the oldest retained message), or
   * an offset (≥ 1). An existing group always resumes after its committed offset.
   */
  from: z.union([z.literal('latest'), z.literal('earliest'), z.int().min(1)]).optional(),
  /** Consumer group: the position is stored in the database and one subscription in the cluster delivers. */
  group: checkedLater<string>().optional(),
  /** Called when messages this subscriber should have read were already removed by retention; delivery then goes on from the oldest retained. */
  onGap: z.custom<(gap: ReliableGap) => void>((v) => typeof v === 'function', { error: 'must be a function' }).optional(),
  /** Messages read per query, and so most messages delivered again after a crash (see docs/state.md). Default 100, at most 10 000. */
  batchSize: z.int({ error: LIMIT }).min(1, { error: LIMIT }).max(10_000, { error: LIMIT }).optional(),
  /** Safety poll interval in ms, for wake-ups lost on the bus. Default 2000. */
  pollMs: z.int({ error: 'must be an integer of at least 50' }).min(50, { error: 'must be an integer of at least 50' }).optional(),
})

/** Offsets `from`…`to` (inclusive) were removed by retention before this subscriber read them. */
export interface ReliableGap {
  readonly from: number
  readonly to: number
  readonly missed: number
}

export type MapOptions<T> = Omit<z.input<typeof mapOptions>, 'codec'> & { codec?: Codec<T> }
export type MapWriteOptions = z.input<typeof mapWriteOptions>
export type MapEntriesOptions = z.input<typeof mapEntriesOptions>
export type TopicOptions<T> = Omit<z.input<typeof topicOptions>, 'codec'> & { codec?: Codec<T> }
export type ReliableTopicOptions<T> = Omit<z.input<typeof reliableTopicOptions>, 'codec'> & { codec?: Codec<T> }
export type ReliableTopicRetention = NonNullable<z.input<typeof reliableTopicOptions>['retention']>
export type ReliableSubscribeOptions = z.input<typeof subscribeOptions>
