/** findJobByKey: the id of the kept job of `name` holding `key`, or null. */
import { tag, type Client, type SchemaName } from './client.js'

export async function findJobByKey(sql: Client, s: SchemaName, name: string, key: string): Promise<string | null> {
  const [row] = await tag(sql)<{ id: string }[]>`select id from ${s}.jobs where name = ${name} and key = ${key}`
  return row?.id ?? null
}
