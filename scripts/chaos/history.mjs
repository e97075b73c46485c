// What a chaos run left behind, gathered for the checks: every instance process's journal (one per
// process, in the order it was written) and the rows the database holds at the end.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

/**
 * One entry per process (`run` = "<instance>#<pid>"): its journal lines, and where in them it became
 * ready. A last line cut short by a kill is dropped.
 */
export function readJournals(dir) {
  const runs = new Map()
  const folder = join(dir, 'journal')
  let files = []
  try {
    files = readdirSync(folder)
  } catch {
    return runs
  }
  for (const file of files) {
    const m = /^(.+)-(\d+)\.jsonl$/.exec(file)
    if (!m) continue
    const lines = []
    for (const text of readFileSync(join(folder, file), 'utf8').split('\n')) {
      if (!text) continue
      try {
        lines.push(JSON.parse(text))
      } catch {
        /* a line cut short by a kill */
      }
    }
    const run = `${m[1]}#${m[2]}`
    const readyIndex = lines.findIndex((l) => l.k === 'ready')
    runs.set(run, {
      run,
      instance: m[1],
      pid: Number(m[2]),
      lines,
      readyIndex,
      readyAt: readyIndex >= 0 ? lines[readyIndex].t : null,
      quiesced: lines.some((l) => l.k === 'quiesced'),
      closed: lines.some((l) => l.k === 'closed'),
    })
  }
  return runs
}

/** The rows the checks need, read after every instance has stopped. */
export async function readDatabase(sql) {
  const [fenceWrites, txEffects, jobs, map, heads, messages] = await Promise.all([
    sql`select name, token::text as token, run, kind, accepted, seq::int as seq, at from chaos.fence_writes order by id`,
    sql`select job_id::text as job_id, run from chaos.tx_effects`,
    sql`select id::text as id, name, state, key, attempts from chorus.jobs where name in ('chaos-tx', 'chaos-plain')`,
    sql`select key, value from chorus.map_entries where map = 'chaos-counters'`,
    sql`select head::int as head from chorus.reliable_topics where topic = 'chaos-rt'`,
    sql`select msg_offset::int as o, data from chorus.reliable_topic_messages where topic = 'chaos-rt'`,
  ])
  return {
    fenceWrites,
    txEffects,
    jobs,
    map: new Map(map.map((r) => [r.key, Number(r.value)])),
    reliableHead: heads[0]?.head ?? 0,
    reliableMessages: new Map(messages.map((r) => [r.o, JSON.parse(r.data)])),
  }
}
