/**
 * insertJob: stores one job, due at `atMs` (epoch ms) or, when `atMs` is -1, `delayMs` from now
 * (database time). With a `key`, a kept job of the same name and key makes this insert nothing.
 */
import { tag, type Client, type SchemaName } from './client.js'

/** A stored job and how long until it is due (ms, database time). */
export interface InsertedJob {
  id: string
  name: string
  key: string | null
  due_in_ms: number
}

export interface InsertJob {
  name: string
  /** The payload as JSON text. */
  payload: string
  atMs: number
  delayMs: number
  /** '' for none. */
  key: string
  priority: number
}

/** The stored job, or undefined when its key is held by a kept job. */
export async function insertJob(sql: Client, s: SchemaName, { name, payload, atMs, delayMs, key, priority }: InsertJob): Promise<InsertedJob | undefined> {
  const [row] = await tag(sql)<InsertedJob[]>`
        insert into ${s}.jobs (name, payload, priority, run_at, key)
        values (${name}, ${payload}::text::jsonb, ${priority},
                case when ${atMs}::float8 >= 0 then to_timestamp(${atMs}::float8 / 1000) else now() + ${delayMs}::float8 * interval '1 millisecond' end,
                nullif(${key}, ''))
        on conflict (name, key) where key is not null do nothing
        returning id, name, key, (extract(epoch from run_at - now()) * 1000)::float8 as due_in_ms`
  return row
}
