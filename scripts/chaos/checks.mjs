// The verdicts of a chaos run, from its recorded history alone (journals and the final database): each
// check returns { name, passed, detail, data }. Nothing here measures time to pass or fail a check;
// wall-clock times are only compared to order events (a later start than another's end).

const MAX_EXAMPLES = 5

function verdict(name, problems, detail, data = {}) {
  return { name, passed: problems.length === 0, detail: problems.length ? `${problems.length} problem(s): ${problems.slice(0, MAX_EXAMPLES).join('; ')}` : detail, data: { ...data, problems: problems.slice(0, 50) } }
}

function linesOf(runs, kind) {
  const out = []
  for (const r of runs.values()) for (const l of r.lines) if (l.k === kind) out.push({ ...l, run: r.run })
  return out
}

/** Accepted fenced writes, in the fence's own write order, never go back to an older token, and holders' sections never interleave. */
export function checkFence(db, runs) {
  const problems = []
  let sections = 0
  let accepted = 0
  let refused = 0
  for (const name of [...new Set(db.fenceWrites.map((w) => w.name))].sort()) {
    const writes = db.fenceWrites.filter((w) => w.name === name)
    refused += writes.filter((w) => !w.accepted).length
    const ok = writes.filter((w) => w.accepted).sort((a, b) => a.seq - b.seq)
    accepted += ok.length
    const seqs = new Set()
    let last = null
    const closedTokens = new Set()
    for (const w of ok) {
      if (seqs.has(w.seq)) problems.push(`${name}: write order ${w.seq} given twice`)
      seqs.add(w.seq)
      const token = BigInt(w.token)
      if (last === null || token !== BigInt(last.token)) {
        if (last !== null && token < BigInt(last.token)) problems.push(`${name}: token ${w.token} (${w.run}) accepted after ${last.token} (${last.run})`)
        if (closedTokens.has(w.token)) problems.push(`${name}: token ${w.token} wrote again after token ${last.token} (overlapping sections)`)
        if (w.kind !== 'begin') problems.push(`${name}: token ${w.token} (${w.run}) continued a section it never began`)
        if (last !== null) closedTokens.add(last.token)
        sections++
      } else if (w.run !== last.run) {
        problems.push(`${name}: token ${w.token} written by ${last.run} and ${w.run}`)
      }
      if (last !== null && w.at < last.at) problems.push(`${name}: write ${w.seq} stamped before write ${last.seq}`)
      last = w
    }
  }
  const overlaps = holderOverlaps(runs)
  return verdict(
    'locks: fenced writes never overlap',
    problems,
    `${sections} sections, ${accepted} accepted writes, ${refused} refused (older token); holders overlapped in their own view ${overlaps} times`,
    { sections, accepted, refused, holderOverlaps: overlaps },
  )
}

/**
 * How often a grant was in hand while an earlier holder of the same name still believed it held the
 * lock (no release begun, no lock:lost, process still writing its journal). Not a failure by
 * itself — a paused holder is what the fence is for — but a figure worth watching.
 */
function holderOverlaps(runs) {
  const holds = []
  for (const r of runs.values()) {
    const open = new Map()
    const last = r.lines.length ? r.lines[r.lines.length - 1].t : 0
    for (const l of r.lines) {
      if (l.k === 'lock-grant') open.set(`${l.name}/${l.token}`, { name: l.name, from: l.t, run: r.run })
      else if (l.k === 'lock-release' || l.k === 'lock-lost') {
        const h = open.get(`${l.name}/${l.token}`)
        if (h) holds.push({ ...h, to: l.t })
        open.delete(`${l.name}/${l.token}`)
      }
    }
    for (const h of open.values()) holds.push({ ...h, to: last })
  }
  let n = 0
  for (const name of new Set(holds.map((h) => h.name))) {
    const of = holds.filter((h) => h.name === name).sort((a, b) => a.from - b.from)
    let end = -Infinity
    for (const h of of) {
      if (h.from < end) n++
      end = Math.max(end, h.to)
    }
  }
  return n
}

/**
 * Lock tokens strictly increase: a grant whose request started after another grant of the same name
 * had been handed out carries a greater token; and no token is handed out twice.
 */
export function checkTokens(runs) {
  const problems = []
  const grants = linesOf(runs, 'lock-grant').map((g) => ({ ...g, token: BigInt(g.token) }))
  const names = [...new Set(grants.map((g) => g.name))].sort()
  for (const name of names) {
    const of = grants.filter((g) => g.name === name)
    const seen = new Map()
    for (const g of of) {
      const other = seen.get(g.token)
      if (other) problems.push(`${name}: token ${g.token} granted to ${other.run} and ${g.run}`)
      seen.set(g.token, g)
    }
    // Sorted by when each grant was in hand: the largest token of those granted strictly before a request started.
    const byGranted = [...of].sort((a, b) => a.t - b.t)
    const prefixMax = []
    let max = null
    for (const g of byGranted) {
      if (max === null || g.token > max.token) max = g
      prefixMax.push(max)
    }
    for (const g of of) {
      let lo = 0
      let hi = byGranted.length
      while (lo < hi) {
        const mid = (lo + hi) >> 1
        if (byGranted[mid].t < g.s) lo = mid + 1
        else hi = mid
      }
      const before = lo > 0 ? prefixMax[lo - 1] : null
      if (before && before.token >= g.token) problems.push(`${name}: ${g.run} got token ${g.token} after ${before.run} had been granted ${before.token}`)
    }
  }
  return verdict('locks: tokens strictly increase', problems, `${grants.length} grants of ${names.length} names`, { grants: grants.length })
}

function enqueueAcks(runs, kind) {
  const acked = new Map()
  let intents = 0
  for (const r of runs.values()) {
    for (const l of r.lines) {
      if (l.k === `${kind}-enq`) intents++
      else if (l.k === `${kind}-enq-ack`) acked.set(l.key, l.id)
    }
  }
  return { acked, unknown: intents - acked.size }
}

/** Every transactional job is completed with exactly one effect row; every acknowledged enqueue is stored. */
export function checkTransactionalJobs(runs, db) {
  const problems = []
  const jobs = db.jobs.filter((j) => j.name === 'chaos-tx')
  const byId = new Map(jobs.map((j) => [j.id, j]))
  const effects = new Map()
  for (const e of db.txEffects) effects.set(e.job_id, (effects.get(e.job_id) ?? 0) + 1)
  const { acked, unknown } = enqueueAcks(runs, 'tx')
  for (const [key, id] of acked) {
    const job = byId.get(id)
    if (!job) problems.push(`acknowledged job ${id} (${key}) is not stored`)
    else if (job.key !== key) problems.push(`job ${id} has key ${job.key}, acknowledged for ${key}`)
  }
  let doubled = 0
  for (const job of jobs) {
    const n = effects.get(job.id) ?? 0
    if (job.state !== 'completed') problems.push(`job ${job.id} ended ${job.state}`)
    if (n !== 1) problems.push(`job ${job.id} has ${n} effects`)
    if (n > 1) doubled++
  }
  for (const id of effects.keys()) if (!byId.has(id)) problems.push(`an effect for job ${id}, which does not exist`)
  const retried = jobs.filter((j) => j.attempts > 1).length
  return verdict('jobs: transactional effect exactly once', problems, `${jobs.length} jobs, ${db.txEffects.length} effects, ${retried} run more than once, ${unknown} enqueues unacknowledged`, {
    jobs: jobs.length,
    effects: db.txEffects.length,
    retried,
    unknownEnqueues: unknown,
    doubled,
  })
}

/** Every plain job completed and ran at least once (its handler recorded the run). */
export function checkPlainJobs(runs, db) {
  const problems = []
  const jobs = db.jobs.filter((j) => j.name === 'chaos-plain')
  const byId = new Map(jobs.map((j) => [j.id, j]))
  const ran = new Map()
  for (const l of linesOf(runs, 'plain-run')) ran.set(l.id, (ran.get(l.id) ?? 0) + 1)
  const { acked, unknown } = enqueueAcks(runs, 'plain')
  for (const [key, id] of acked) if (!byId.has(id)) problems.push(`acknowledged job ${id} (${key}) is not stored`)
  let runsTotal = 0
  for (const job of jobs) {
    const n = ran.get(job.id) ?? 0
    runsTotal += n
    if (job.state !== 'completed') problems.push(`job ${job.id} ended ${job.state}`)
    if (n === 0) problems.push(`job ${job.id} never ran`)
  }
  return verdict('jobs: no plain job lost', problems, `${jobs.length} jobs, ${runsTotal} runs (${runsTotal - jobs.length} again after a failure or kill), ${unknown} enqueues unacknowledged`, {
    jobs: jobs.length,
    runs: runsTotal,
    unknownEnqueues: unknown,
  })
}

/**
 * Topic: each receiver gets each publisher's messages in order, at most once, and every acknowledged
 * message it should have had — published (the call began) after the receiver was ready — either
 * arrived or is covered by a gap notice journaled between the receipts around it (a sequence gap
 * counts only for that publisher). Past a receiver's last receipt from a publisher nothing is
 * expected of a receiver that was killed (the message may have been in flight); a receiver that ran
 * to the end must have it all.
 */
export function checkTopic(runs) {
  const problems = []
  const published = new Map() // publishing run → Map(seq → intent time), acknowledged ones only
  const busIds = new Map() // publishing run → bus publisher ids seen on its messages
  for (const r of runs.values()) {
    const intents = new Map()
    const acked = new Map()
    for (const l of r.lines) {
      if (l.k === 'topic-pub') intents.set(l.s, l.t)
      else if (l.k === 'topic-pub-ack') acked.set(l.s, intents.get(l.s))
      else if (l.k === 'topic-recv') {
        if (!busIds.has(l.r)) busIds.set(l.r, new Set())
        busIds.get(l.r).add(l.p)
      }
    }
    published.set(r.run, acked)
  }
  let expected = 0
  let received = 0
  let covered = 0
  let gaps = 0
  for (const r of runs.values()) {
    if (r.readyIndex < 0) continue
    const receipts = new Map() // publisher run → [{ s, i }]
    const gapLines = []
    r.lines.forEach((l, i) => {
      if (l.k === 'topic-recv') {
        if (!receipts.has(l.r)) receipts.set(l.r, [])
        receipts.get(l.r).push({ s: l.s, i })
      } else if (l.k === 'gap') gapLines.push({ ...l, i })
    })
    gaps += gapLines.length
    const survivor = r.quiesced
    for (const [p, acked] of published) {
      const got = receipts.get(p) ?? []
      for (let k = 1; k < got.length; k++) {
        if (got[k].s <= got[k - 1].s) problems.push(`${r.run} received ${p}'s message ${got[k].s} after ${got[k - 1].s}`)
      }
      const gotSet = new Set(got.map((g) => g.s))
      const sorted = [...got].sort((a, b) => a.s - b.s)
      /** Index in `sorted` of the first receipt with a sequence number above `s`. */
      const above = (s) => {
        let lo = 0
        let hi = sorted.length
        while (lo < hi) {
          const mid = (lo + hi) >> 1
          if (sorted[mid].s <= s) lo = mid + 1
          else hi = mid
        }
        return lo
      }
      const ids = busIds.get(p) ?? new Set()
      const coveredBetween = (a, b) => gapLines.some((g) => g.i > a && g.i < b && (g.reason !== 'sequence' || ids.has(g.publisher)))
      for (const [s, intentAt] of acked) {
        if (!(intentAt > r.readyAt)) continue
        const at = above(s)
        const next = sorted[at]
        if (!next && !survivor) continue
        expected++
        if (gotSet.has(s)) {
          received++
          continue
        }
        const prev = at > 0 ? sorted[at - 1] : undefined
        if (coveredBetween(prev ? prev.i : r.readyIndex, next ? next.i : Infinity)) covered++
        else problems.push(`${r.run} never received ${p}'s message ${s} and saw no gap notice for it`)
      }
    }
  }
  return verdict('topic: no loss without a gap notice', problems, `${received} of ${expected} expected deliveries, ${covered} missed under a gap notice, ${gaps} gap notices`, {
    expected,
    received,
    coveredByGap: covered,
    gapNotices: gaps,
  })
}

/** Reliable topic: every offset up to the head reached the consumer group, with the message published at it. */
export function checkReliable(runs, db) {
  const problems = []
  const head = db.reliableHead
  const deliveries = new Map()
  for (const l of linesOf(runs, 'rt-recv')) {
    if (!deliveries.has(l.o)) deliveries.set(l.o, [])
    deliveries.get(l.o).push(l)
  }
  let acked = 0
  for (const l of linesOf(runs, 'rt-pub-ack')) {
    acked++
    if (l.o > head) problems.push(`offset ${l.o} acknowledged to ${l.run} beyond the head ${head}`)
    const stored = db.reliableMessages.get(l.o)
    if (stored && (stored.r !== l.run || stored.s !== l.s)) problems.push(`offset ${l.o} acknowledged for ${l.run}/${l.s} holds ${stored.r}/${stored.s}`)
  }
  let lost = 0
  for (let o = 1; o <= head; o++) {
    const d = deliveries.get(o)
    if (!d) {
      lost++
      if (lost <= MAX_EXAMPLES) problems.push(`offset ${o} never delivered to the group`)
      continue
    }
    const stored = db.reliableMessages.get(o)
    for (const x of d) if (stored && (x.r !== stored.r || x.s !== stored.s)) problems.push(`offset ${o} delivered as ${x.r}/${x.s}, stored as ${stored.r}/${stored.s}`)
  }
  if (lost > MAX_EXAMPLES) problems.push(`${lost - MAX_EXAMPLES} more offsets never delivered`)
  let again = 0
  for (const d of deliveries.values()) again += d.length - 1
  return verdict('reliable topic: no message lost', problems, `${head} offsets, ${acked} publishes acknowledged, all delivered; ${again} delivered again after a takeover`, {
    head,
    acknowledged: acked,
    redelivered: again,
    lost,
  })
}

/**
 * Map counters: each final value lies between the acknowledged increments and those plus the ones
 * whose outcome is unknown (an error, or a kill before the answer); the values returned to
 * acknowledged increments of one key are all different.
 */
export function checkMap(runs, db) {
  const problems = []
  const perKey = new Map()
  for (const r of runs.values()) {
    const intents = new Map()
    for (const l of r.lines) {
      if (l.k === 'map-inc') intents.set(l.n, l.key)
      else if (l.k === 'map-inc-ack') {
        intents.delete(l.n)
        const k = perKey.get(l.key) ?? { acked: 0, unknown: 0, values: new Set() }
        k.acked++
        if (k.values.has(l.v)) problems.push(`${l.key}: value ${l.v} returned to two increments`)
        k.values.add(l.v)
        perKey.set(l.key, k)
      }
    }
    for (const key of intents.values()) {
      const k = perKey.get(key) ?? { acked: 0, unknown: 0, values: new Set() }
      k.unknown++
      perKey.set(key, k)
    }
  }
  const rows = []
  let acked = 0
  let unknown = 0
  for (const [key, k] of [...perKey].sort()) {
    const value = db.map.get(key) ?? 0
    acked += k.acked
    unknown += k.unknown
    rows.push({ key, value, acked: k.acked, unknown: k.unknown })
    if (value < k.acked || value > k.acked + k.unknown) problems.push(`${key} = ${value}, outside [${k.acked}, ${k.acked + k.unknown}]`)
    const top = Math.max(0, ...k.values)
    if (top > value) problems.push(`${key}: an increment returned ${top}, more than the final ${value}`)
  }
  return verdict('map: counters exact', problems, `${acked} increments acknowledged, ${unknown} unknown; ${rows.map((r) => `${r.key}=${r.value}`).join(' ')}`, { acked, unknown, keys: rows })
}

/** No process reported an uncaught exception or unhandled rejection, and none exited unasked. */
export function checkCrashes(runs, meta) {
  const problems = []
  for (const l of linesOf(runs, 'fatal')) problems.push(`${l.run}: ${l.kind}: ${l.error.split('\n').slice(0, 3).join(' | ')}`)
  for (const c of meta.crashes) problems.push(`${c.id} (pid ${c.pid}) exited by itself (${c.signal ?? `code ${c.code}`})`)
  return verdict('no unexpected crash', problems, `${runs.size} processes, none crashed`, { processes: runs.size })
}

/** Every instance closed when asked, once the database was back and the work done. */
export function checkShutdown(meta) {
  const problems = meta.closeFailures.map((id) => `${id} did not close when asked`)
  return verdict('clean shutdown', problems, `${meta.instances - meta.closeFailures.length} instances closed`, {})
}

export const SUBSYSTEMS = [
  'membership',
  'locks',
  'locks.fenced',
  'jobs.enqueue',
  'jobs.tx',
  'jobs.plain',
  'topic.publish',
  'topic.receive',
  'reliable.publish',
  'reliable.deliver',
  'map',
]

/** Subsystems that work on one instance at a time (the consumer group's holder): no "slowest instance". */
const ONE_AT_A_TIME = new Set(['reliable.deliver'])

/**
 * After each PostgreSQL restart, from the moment it accepted connections again: each subsystem's
 * first success anywhere in the cluster, and the slowest instance's first success (among the
 * processes that were already running then). Membership counts a rejoin after isolation, and has no
 * figure when no instance was isolated. A subsystem with no success before the next restart (or
 * the end) did not recover.
 */
export function recovery(runs, meta) {
  const problems = []
  const table = meta.restarts.map((restart, i) => {
    const until = meta.restarts[i + 1]?.stopAt ?? Infinity
    const subs = {}
    for (const sub of SUBSYSTEMS) {
      let first = Infinity
      let slowest = -Infinity
      for (const r of runs.values()) {
        const hit = r.lines.find((l) => l.k === 'ok' && l.sub === sub && l.t >= restart.readyAt && l.t < until)
        if (!hit) continue
        first = Math.min(first, hit.t - restart.readyAt)
        if (r.readyAt !== null && r.readyAt < restart.stopAt) slowest = Math.max(slowest, hit.t - restart.readyAt)
      }
      if (first === Infinity) {
        subs[sub] = null
        if (sub !== 'membership') problems.push(`restart ${i + 1}: ${sub} never succeeded again`)
      } else subs[sub] = { firstMs: first, slowestMs: ONE_AT_A_TIME.has(sub) || slowest === -Infinity ? null : slowest }
    }
    return { restart: i + 1, crash: Boolean(restart.crash), downMs: restart.readyAt - restart.stopAt, subsystems: subs }
  })
  const v = verdict('every subsystem recovered after each PostgreSQL restart', problems, `${meta.restarts.length} restarts, every subsystem succeeded again after each`, {})
  return { verdict: v, table }
}

/** The run did what it says: instances were killed, PostgreSQL restarted, and every subsystem worked. */
export function checkActivity(runs, meta) {
  const problems = []
  if (meta.kills === 0) problems.push('no instance was killed')
  if (meta.restarts.length === 0) problems.push('PostgreSQL was never restarted')
  const counts = {}
  for (const sub of SUBSYSTEMS) counts[sub] = 0
  const errors = {}
  for (const r of runs.values()) {
    for (const l of r.lines) {
      if (l.k === 'ok') counts[l.sub] = (counts[l.sub] ?? 0) + 1
      else if (l.k === 'err') errors[l.sub] = (errors[l.sub] ?? 0) + 1
    }
  }
  for (const sub of SUBSYSTEMS) if (sub !== 'membership' && counts[sub] === 0) problems.push(`${sub} never succeeded`)
  return { verdict: verdict('chaos happened and every subsystem worked', problems, `${meta.kills} kills, ${meta.restarts.length} PostgreSQL restarts`, {}), counts, errors }
}
