/**
 * Sweeps what crashed writers leave behind: temporary files (and the remains of directories being
 * removed), whose names carry the writer's instance id and membership epoch. One is deleted when
 * its writer is known down (that epoch ended), when its writer is unknown to the membership view
 * and it is older than a grace period, or when nobody touched it for `tempMaxAgeMs`. Sweeps run at
 * start, when a member goes down and every ten minutes; one instance sweeps at a time, and a sweep
 * asked for while one runs here runs once more after it (the walk may have passed the directory
 * that matters).
 */
import { lstat, readdir, rm } from 'node:fs/promises'
import { join, relative } from 'node:path'
import type { Logger } from 'pino'
import { toError } from '../errors.js'
import type { Events } from '../events.js'
import type { Locks } from '../locks/locks.js'
import type { Membership } from '../membership/membership.js'
import { Rerun } from '../util/rerun.js'
import { parseTempName, RESERVED_PREFIX, type TempOwner } from './paths.js'
import type { Root } from './root.js'

/** Between sweeps when nothing triggers one. */
const SWEEP_INTERVAL_MS = 10 * 60 * 1000
/** When another instance was sweeping, try again after this long. */
const BUSY_RETRY_MS = 5000
/** Coalesces a burst of triggers (several members down at once). */
const TRIGGER_DELAY_MS = 100
/** The cluster-wide lock that lets one instance sweep at a time. */
const SWEEP_LOCK = 'chorus:files:sweep'

type Verdict = { remove: false } | { remove: true; reason: 'writer-down' | 'writer-unknown' | 'age' }

export class Sweeper {
  readonly #root: Root
  readonly #members: Membership
  readonly #locks: Locks
  readonly #events: Events
  readonly #log: Logger
  readonly #tempMaxAgeMs: number
  readonly #graceMs: number
  readonly #rerun: Rerun
  #timer: NodeJS.Timeout | null = null
  #interval: NodeJS.Timeout | null = null
  /** What the last sweep removed (`null`: another instance was sweeping). */
  #removed: number | null = 0
  #stopped = false
  #off: (() => void)[] = []

  constructor(p: { root: Root; members: Membership; locks: Locks; events: Events; log: Logger; tempMaxAgeMs: number; graceMs: number }) {
    this.#root = p.root
    this.#members = p.members
    this.#locks = p.locks
    this.#events = p.events
    this.#log = p.log
    this.#tempMaxAgeMs = p.tempMaxAgeMs
    this.#graceMs = p.graceMs
    this.#rerun = new Rerun(
      async () => {
        this.#removed = 0
        this.#removed = await this.#sweep()
      },
      (err) => this.#log.warn({ err: toError(err) }, 'sweeping temporary files failed; the next sweep tries again'),
    )
  }

  start(): void {
    this.#off.push(
      this.#members.on('member:down', () => this.schedule(TRIGGER_DELAY_MS)),
      // This instance's own files of the epoch it lost.
      this.#members.on('member:self:rejoined', () => this.schedule(TRIGGER_DELAY_MS)),
    )
    this.#interval = setInterval(() => this.schedule(0), SWEEP_INTERVAL_MS)
    this.#interval.unref()
    this.schedule(0)
  }

  schedule(delayMs: number): void {
    if (this.#stopped || this.#timer) return
    this.#timer = setTimeout(() => {
      this.#timer = null
      void this.run()
    }, delayMs)
    this.#timer.unref()
  }

  /** Sweeps now: resolves with the number of entries removed, or `null` when another instance was sweeping. */
  async run(): Promise<number | null> {
    await this.#rerun.run()
    return this.#removed
  }

  async stop(): Promise<void> {
    this.#stopped = true
    for (const off of this.#off) off()
    this.#off = []
    if (this.#timer) clearTimeout(this.#timer)
    if (this.#interval) clearInterval(this.#interval)
    this.#timer = this.#interval = null
    // A sweep under way finishes first (the run queued behind it sees the stop and does nothing).
    if (this.#rerun.running) await this.#rerun.run()
  }

  async #sweep(): Promise<number | null> {
    if (this.#stopped) return 0
    const real = await this.#root.realIfExists()
    if (real === null) return 0
    const self = this.#members.self
    if (self.state !== 'up' && self.state !== 'draining') return 0
    const lock = await this.#locks.tryAcquire(SWEEP_LOCK)
    if (!lock) {
      this.schedule(BUSY_RETRY_MS)
      return null
    }
    let removed = 0
    try {
      const dirs = [real]
      while (dirs.length > 0 && !this.#stopped && !lock.signal.aborted) {
        const dir = dirs.pop()!
        let entries
        try {
          entries = await readdir(dir, { withFileTypes: true })
        } catch {
          continue // removed or moved meanwhile
        }
        for (const e of entries) {
          const at = join(dir, e.name)
          if (e.name.startsWith(RESERVED_PREFIX)) {
            if (await this.#consider(real, at, e.name)) removed++
          } else if (e.isDirectory()) {
            dirs.push(at)
          }
        }
      }
    } finally {
      await lock.release()
    }
    if (removed > 0) this.#log.info({ removed }, 'swept temporary files left by writers that are gone')
    return removed
  }

  async #consider(real: string, at: string, name: string): Promise<boolean> {
    let mtimeMs: number
    try {
      mtimeMs = (await lstat(at)).mtimeMs
    } catch {
      return false
    }
    const owner = parseTempName(name)
    const verdict = this.#judge(owner, Date.now() - mtimeMs)
    if (!verdict.remove) return false
    try {
      await rm(at, { recursive: true, force: true })
    } catch (err) {
      this.#log.warn({ err: toError(err), path: at }, 'could not remove a temporary file')
      return false
    }
    this.#events.emit('files:temp:swept', {
      path: relative(real, at), instanceId: owner?.instanceId ?? null, epoch: owner?.epoch ?? null, reason: verdict.reason,
    })
    return true
  }

  #judge(owner: TempOwner | null, ageMs: number): Verdict {
    if (ageMs > this.#tempMaxAgeMs) return { remove: true, reason: 'age' }
    if (owner === null) return { remove: false }
    const self = this.#members.self
    if (owner.instanceId === self.instanceId) {
      if (owner.epoch === self.epoch) return { remove: false }
      if (owner.epoch < self.epoch) return { remove: true, reason: 'writer-down' }
      return ageMs > this.#graceMs ? { remove: true, reason: 'writer-unknown' } : { remove: false }
    }
    const member = this.#members.get(owner.instanceId)
    if (member) {
      if (member.epoch > owner.epoch || (member.epoch === owner.epoch && member.status === 'down')) return { remove: true, reason: 'writer-down' }
      if (member.epoch === owner.epoch) return { remove: false }
    }
    // Not in this instance's view (yet, or any more): only once it is surely not a fresh writer.
    return ageMs > this.#graceMs ? { remove: true, reason: 'writer-unknown' } : { remove: false }
  }
}
