// `npm run chaos -- --seconds N [--seed S] [--crash] [--json] [--keep]`: three instances on an
// embedded PostgreSQL, kill -9 of instances every ~15 s and PostgreSQL restarts (with --crash, some
// of them crashes), then a check of the recorded history. Progress goes to stderr, the summary (a
// table, or JSON with --json) to stdout; a failed check exits 1.
import { randomInt } from 'node:crypto'
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { machine, onCleanup, options, runMain, sleep } from '../../bench/lib/harness.mjs'
import {
  checkActivity,
  checkCrashes,
  checkFence,
  checkMap,
  checkPlainJobs,
  checkReliable,
  checkShutdown,
  checkTokens,
  checkTopic,
  checkTransactionalJobs,
  recovery,
  SUBSYSTEMS,
} from './checks.mjs'
import { createAppSchema, startDatabase } from './database.mjs'
import { readDatabase, readJournals } from './history.mjs'
import { Instance } from './instances.mjs'
import { describeEvent, makePlan } from './plan.mjs'
import { renderText } from './report.mjs'

const WORKER = fileURLToPath(new URL('../../test/fixtures/chaos-worker.mjs', import.meta.url))
/** How long the end of a run may wait for queues and deliveries to catch up before checking anyway. */
const SETTLE_MS = 60_000

const opts = options('CHAOS', { seconds: 60, seed: 0, instances: 3, crash: false, json: false, keep: false, recheck: '' })
const seed = opts.seed || randomInt(1, 2 ** 31)
const t0 = Date.now()
const say = (text) => process.stderr.write(`[chaos ${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${text}\n`)

async function main() {
  say(`seed ${seed} (replay with --seed ${seed})`)
  const dir = await mkdtemp(join(tmpdir(), 'chorus-chaos-'))
  await chmod(dir, 0o755) // the postgres user must reach the data directory
  let keep = opts.keep
  onCleanup(async () => {
    if (!keep) await rm(dir, { recursive: true, force: true })
  })

  const db = await startDatabase(dir)
  onCleanup(() => db.close())
  {
    const sql = db.client()
    await createAppSchema(sql)
    await sql.end({ timeout: 1 })
  }

  const crashes = []
  const env = { DATABASE_URL: db.url, CHORUS_PRESET: 'local', CHORUS_SECRET: 'chaos-secret-0123456789', CHAOS_DIR: dir, CHORUS_LOG_LEVEL: 'warn' }
  let chaosOver = false
  const instances = Array.from({ length: opts.instances }, (_, i) => {
    const instance = new Instance({
      id: `chaos-${i + 1}`,
      script: WORKER,
      env,
      dir,
      onCrash: (c) => {
        crashes.push(c)
        say(`${c.id} (pid ${c.pid}) exited by itself (${c.signal ?? `code ${c.code}`}); starting it again`)
        if (!chaosOver) setTimeout(() => void instance.start(), 1000)
      },
    })
    onCleanup(() => instance.kill())
    return instance
  })
  await Promise.all(instances.map((i) => i.start()))
  say(`${instances.length} instances ready; PostgreSQL at port ${new URL(db.url).port}; files in ${dir}`)

  // ---- chaos --------------------------------------------------------------------------------------
  const plan = makePlan(seed, opts.seconds, instances.length, { crash: opts.crash })
  for (const e of plan) say(`plan: at ${e.at.toFixed(1)} s ${describeEvent(e)}`)
  const start = Date.now()
  const restarts = []
  const comebacks = []
  let kills = 0
  let doubleKills = 0
  for (const e of plan) {
    const wait = start + e.at * 1000 - Date.now()
    if (wait > 0) await sleep(wait)
    if (e.kind === 'kill') {
      const victims = e.victims.map((v, k) => ({ instance: instances[v], backAfter: e.backAfter[k] })).filter((v) => v.instance.running)
      if (victims.length === 2) doubleKills++
      for (const { instance, backAfter } of victims) {
        const pid = instance.pid
        await instance.kill()
        kills++
        say(`killed ${instance.id} (pid ${pid})`)
        comebacks.push(
          sleep(backAfter * 1000).then(() => {
            say(`starting ${instance.id} again`)
            return instance.start().then(
              (r) => say(`${instance.id} ready again (${r.run})`),
              (err) => say(`${instance.id} did not start: ${err.message}`),
            )
          }),
        )
      }
    } else {
      const stopAt = Date.now()
      say(e.crash ? 'crashing PostgreSQL (immediate shutdown)' : 'stopping PostgreSQL')
      await (e.crash ? db.crash() : db.stop())
      const downAt = Date.now()
      say(`PostgreSQL stopped (took ${downAt - stopAt} ms)`)
      await sleep(Math.max(0, e.downFor * 1000 - (downAt - stopAt)))
      const readyAt = await db.start()
      restarts.push({ stopAt, downAt, readyAt, crash: e.crash })
      say(`PostgreSQL accepts connections again (down ${((readyAt - stopAt) / 1000).toFixed(1)} s; this supervisor learnt it ${Date.now() - readyAt} ms later)`)
    }
  }
  const endAt = start + opts.seconds * 1000
  if (endAt > Date.now()) await sleep(endAt - Date.now())
  chaosOver = true

  // ---- settle: every instance up, producers stopped, queues and deliveries caught up ----------------
  await Promise.all(comebacks)
  await Promise.all(instances.map((i) => i.start().catch(() => undefined)))
  // The load goes on until every subsystem has succeeded since the last restart somewhere, so that its
  // recovery is seen even when the instances were still starting when the chaos ended.
  const last = restarts.at(-1)
  if (last && !(await recovered(instances, last.readyAt))) say(`some subsystem has not succeeded since the last restart after ${SETTLE_MS / 1000} s`)
  say('chaos over; stopping the load')
  const quiesced = await Promise.all(instances.map((i) => i.call('quiesce', 60_000).catch((err) => (say(err.message), null))))
  const settled = await settle(db, instances, quiesced.filter(Boolean))
  say(settled ? 'queues drained and deliveries caught up' : `still not caught up after ${SETTLE_MS / 1000} s; checking anyway`)
  const closeFailures = []
  await Promise.all(
    instances.map(async (i) => {
      if (!(await i.close(30_000))) closeFailures.push(i.id)
    }),
  )
  say('instances closed; checking the history')

  // ---- checks ---------------------------------------------------------------------------------------
  const sql = db.client()
  const rows = await readDatabase(sql)
  await sql.end({ timeout: 1 })
  const meta = { seed, seconds: opts.seconds, instances: instances.length, crash: opts.crash, machine: machine(), plan, restarts, crashes, closeFailures, kills, doubleKills }
  // Kept beside the journals, so that `--recheck <dir>` can judge the same history again.
  await writeFile(join(dir, 'history.json'), JSON.stringify({ meta, rows }, (_k, v) => (v instanceof Map ? [...v] : v)))
  const summary = judge(dir, rows, meta)
  if (!summary.passed) keep = true
  summary.kept = keep
  report(summary)
}

/** Runs every check on a run's journals and final rows. */
function judge(dir, rows, meta) {
  const runs = readJournals(dir)
  const rec = recovery(runs, meta)
  const activity = checkActivity(runs, meta)
  const checks = [
    checkFence(rows, runs),
    checkTokens(runs),
    checkTransactionalJobs(runs, rows),
    checkPlainJobs(runs, rows),
    checkTopic(runs),
    checkReliable(runs, rows),
    checkMap(runs, rows),
    checkCrashes(runs, meta),
    rec.verdict,
    checkShutdown(meta),
    activity.verdict,
  ]
  return {
    seed: meta.seed,
    seconds: meta.seconds,
    instances: meta.instances,
    crash: meta.crash,
    machine: meta.machine,
    passed: checks.every((c) => c.passed),
    kills: meta.kills,
    doubleKills: meta.doubleKills,
    restarts: meta.restarts.map((r) => ({ downMs: r.readyAt - r.stopAt, crash: Boolean(r.crash) })),
    checks,
    recovery: rec.table,
    counts: activity.counts,
    errors: activity.errors,
    plan: meta.plan,
    dir,
    kept: true,
  }
}

/** Prints the summary; a failed check fails the process. */
function report(summary) {
  process.stdout.write(opts.json ? JSON.stringify(summary) + '\n' : renderText(summary))
  if (opts.json) process.stderr.write(renderText(summary))
  if (!summary.passed) {
    // runMain prints this and exits 1 once the cleanups have run.
    const message = `chaos: ${summary.checks.filter((c) => !c.passed).length} check(s) failed`
    throw Object.assign(new Error(message), { stack: message })
  }
}

/** Waits until each subsystem (membership aside) has succeeded after `since` on some instance; false after SETTLE_MS. */
async function recovered(instances, since) {
  const until = Date.now() + SETTLE_MS
  while (Date.now() < until) {
    const status = (await Promise.all(instances.map((i) => i.call('status', 10_000).catch(() => null)))).filter(Boolean)
    if (SUBSYSTEMS.every((sub) => sub === 'membership' || status.some((s) => (s.lastOk[sub] ?? 0) >= since))) return true
    await sleep(250)
  }
  return false
}

/**
 * Waits until no chaos job is queued or running, the consumer group has handled every offset, and
 * every instance has received every other instance's last acknowledged topic message; false if that
 * has not happened within SETTLE_MS.
 */
async function settle(db, instances, quiesced) {
  const sql = db.client()
  try {
    const until = Date.now() + SETTLE_MS
    while (Date.now() < until) {
      const [{ open }] = await sql`select count(*)::int as open from chorus.jobs where name in ('chaos-tx', 'chaos-plain') and state in ('queued', 'running')`
      const [group] = await sql`
        select t.head::int as head, coalesce(g.committed, 0)::int as committed
        from chorus.reliable_topics t left join chorus.reliable_topic_groups g on g.topic = t.topic and g.grp = 'chaos'
        where t.topic = 'chaos-rt'`
      const status = await Promise.all(instances.map((i) => i.call('status', 10_000).catch(() => null)))
      const topicsDone = status.every((s) => s && quiesced.every((q) => (s.seen[q.run] ?? 0) >= q.topicAcked))
      if (open === 0 && (group?.committed ?? 0) >= (group?.head ?? 0) && topicsDone) return true
      await sleep(250)
    }
    return false
  } finally {
    await sql.end({ timeout: 1 })
  }
}

/** `--recheck <dir>`: judges the history a kept run left in `dir` again, without running anything. */
async function recheck() {
  const { meta, rows } = JSON.parse(await readFile(join(opts.recheck, 'history.json'), 'utf8'))
  rows.map = new Map(rows.map)
  rows.reliableMessages = new Map(rows.reliableMessages)
  for (const w of rows.fenceWrites) w.at = new Date(w.at)
  report(judge(opts.recheck, rows, meta))
}

// Startup, the chaos, the waits for recovery and for queues to drain (at most a minute each), closing and checking.
await runMain(opts.recheck ? recheck : main, { deadlineMs: (opts.seconds + 360) * 1000 })
