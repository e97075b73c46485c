/** findJobsByKeys: the kept jobs holding the pairs (`names[i]`, `keys[i]`). */
import type { Sql } from '../../db/connect.js'
import type { SchemaName } from './client.js'

export function findJobsByKeys(sql: Sql, s: SchemaName, names: string[], keys: string[]): Promise<{ id: string; name: string; key: string }[]> {
  return sql<{ id: string; name: string; key: string }[]>`
        select j.id, j.name, j.key from ${s}.jobs j
        join unnest(${names}::text[], ${keys}::text[]) as m(name, key)
          on j.name = m.name and j.key = m.key`
}
