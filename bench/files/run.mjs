// Shared-files benchmark: writes per second of 4 KB and 1 MB files, side by side in one run, on
// the same file system (a temporary directory):
//   chorus  — cluster.files.write(path, buffer): exclusive path lock in PostgreSQL, temporary file,
//             fsync, rename, fsync of the directory, lock released
//   atomic  — the same temporary file + fsync + rename + directory fsync by hand, without a lock:
//             what durability alone costs
//   plain   — fs.writeFile(path, buffer): no lock, no fsync, not atomic
// One writer at a time, then --concurrency writers on distinct files. Rounds alternate the order;
// the median round is reported with ratios.
//
//   node bench/files/run.mjs [--seconds 2] [--rounds 3] [--concurrency 8] [--files 64]
import { randomBytes } from 'node:crypto'
import { constants } from 'node:fs'
import { mkdir, mkdtemp, open, rename, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { createCluster } from '../../dist/index.js'
import { fmt, machine, median, onCleanup, options, quantile, runMain, startDatabase, table } from '../lib/harness.mjs'

const opts = options('BENCH_FILES', {
  seconds: 2, // measured time per system, size and concurrency, per round
  rounds: 3,
  concurrency: 8,
  files: 64, // distinct file names each system cycles through
  warmup: 20,
  dir: '', // where the files go (default: a new temporary directory)
  deadline: 170_000,
  json: false,
})
const SIZES = [
  ['4 KB', 4 * 1024],
  ['1 MB', 1024 * 1024],
]
const SYSTEMS = ['chorus', 'atomic', 'plain']

await runMain(
  async () => {
    const db = await startDatabase()
    const dir = await mkdtemp(join(opts.dir || tmpdir(), 'chorus-bench-files-'))
    onCleanup(() => rm(dir, { recursive: true, force: true }))
    process.stdout.write(`${machine()}\n${await db.describe()}\nfiles in ${dir}\n`)
    const cluster = await createCluster({
      databaseUrl: db.url, instanceId: 'bench', preset: 'local', secret: 'bench-secret-0123456789abc', logLevel: 'warn',
      files: { root: join(dir, 'chorus'), maxFileBytes: 8 * 1024 * 1024 },
    })
    onCleanup(() => cluster.close())
    for (const s of ['atomic', 'plain']) await mkdir(join(dir, s), { recursive: true })
    const writers = {
      chorus: (name, buf) => cluster.files.write(`w/${name}`, buf),
      atomic: (name, buf) => atomicWrite(join(dir, 'atomic'), name, buf),
      plain: (name, buf) => writeFile(join(dir, 'plain', name), buf),
    }
    const results = {}
    for (let round = 0; round < opts.rounds; round++) {
      const order = round % 2 === 0 ? SYSTEMS : [...SYSTEMS].reverse()
      for (const [label, size] of SIZES) {
        const buf = randomBytes(size)
        for (const s of order) {
          for (const c of [1, opts.concurrency]) {
            const key = `${label}|${s}|${c}`
            ;(results[key] ??= []).push(await measure(writers[s], buf, c))
          }
        }
      }
      process.stderr.write(`round ${round + 1} done\n`)
    }
    report(results)
  },
  { deadlineMs: opts.deadline },
)

/** Temporary file, fsync, rename, directory fsync: atomic and durable, with no lock. */
async function atomicWrite(dir, name, buf) {
  const tmp = join(dir, `.tmp-${name}-${randomBytes(4).toString('hex')}`)
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o666)
  try {
    await fh.write(buf, 0, buf.length)
    await fh.sync()
  } finally {
    await fh.close()
  }
  await rename(tmp, join(dir, name))
  const d = await open(dir, constants.O_RDONLY)
  try {
    await d.sync()
  } finally {
    await d.close()
  }
}

async function measure(write, buf, concurrency) {
  let n = 0
  const next = () => `f${(n++ % opts.files).toString().padStart(3, '0')}-${concurrency}`
  for (let i = 0; i < opts.warmup; i++) await write(next(), buf)
  const latencies = []
  const until = performance.now() + opts.seconds * 1000
  const t0 = performance.now()
  // Each writer owns distinct names, so concurrent writers never queue on one path lock.
  await Promise.all(
    Array.from({ length: concurrency }, async (_, w) => {
      let k = 0
      while (performance.now() < until) {
        const s = performance.now()
        await write(`f${w}-${k++ % Math.max(1, Math.floor(opts.files / concurrency))}-${concurrency}`, buf)
        latencies.push(performance.now() - s)
      }
    }),
  )
  const ms = performance.now() - t0
  latencies.sort((a, b) => a - b)
  return { writes: latencies.length, perSec: (latencies.length * 1000) / ms, mbPerSec: (latencies.length * buf.length) / 1048576 / (ms / 1000), p50Ms: quantile(latencies, 0.5), p99Ms: quantile(latencies, 0.99) }
}

function report(results) {
  const pick = (rounds) => {
    const m = median(rounds.map((r) => r.perSec))
    return rounds.find((r) => r.perSec === m) ?? rounds[0]
  }
  const rows = []
  const ratios = []
  for (const [label] of SIZES) {
    for (const c of [1, opts.concurrency]) {
      const chosen = Object.fromEntries(SYSTEMS.map((s) => [s, pick(results[`${label}|${s}|${c}`])]))
      for (const s of SYSTEMS) {
        const r = chosen[s]
        rows.push([`${label}, ${c} writer${c > 1 ? 's' : ''}`, s, fmt(r.perSec), fmt(r.mbPerSec, 1), fmt(r.p50Ms, 2), fmt(r.p99Ms, 2), `${fmt(r.perSec / chosen.chorus.perSec, 2)}×`])
      }
      ratios.push(`${label}, ${c}: plain/chorus = ${fmt(chosen.plain.perSec / chosen.chorus.perSec, 2)}×, atomic/chorus = ${fmt(chosen.atomic.perSec / chosen.chorus.perSec, 2)}×`)
    }
  }
  process.stdout.write(`\nwrites per second, median of ${opts.rounds} rounds of ${opts.seconds} s\n\n`)
  process.stdout.write(table(['case', 'system', 'writes/s', 'MB/s', 'p50 ms', 'p99 ms', '÷ chorus'], rows) + '\n\n')
  process.stdout.write(ratios.join('\n') + '\n')
  if (opts.json) process.stdout.write(JSON.stringify({ opts, results }) + '\n')
}
