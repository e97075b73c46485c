/**
 * Shared files (`cluster.files`): a directory every instance mounts, changed only atomically and
 * under path locks, so that what one instance writes is whole for all and a removal never leaves a
 * file without its directories. Owns the subsystem's lifecycle — every store of the cluster (the
 * root and each area) refuses work once it closed — and the sweeper of temporary files left by
 * crashed writers. The API itself is `FileStore` (store.ts), which this class is for the root.
 */
import { ChorusError } from '../errors.js'
import type { Locks } from '../locks/locks.js'
import type { Subsystem, SubsystemDeps } from '../subsystem.js'
import { Machine } from '../util/machine.js'
import { Root } from './root.js'
import { FileStore } from './store.js'
import { Sweeper } from './sweep.js'

/**
 * States of the subsystem, each with the states it may be entered from:
 * - `new`: constructed, not started (usable: the root is created on first use).
 * - `open`: started; sweeping.
 * - `closed`: every operation refused. Entered from `new` too, when the cluster closes before it
 *   started the subsystem.
 */
export const enteredFrom = {
  new: [],
  open: ['new'],
  closed: ['new', 'open'],
} as const

export type FilesState = keyof typeof enteredFrom

/** The subsystem's state machine (exported so its transitions can be shown without a database). */
export function filesMachine(): Machine<FilesState> {
  return new Machine<FilesState>('files', enteredFrom, 'new')
}

export class Files extends FileStore implements Subsystem {
  readonly name = 'files'
  readonly #sweeper: Sweeper
  /** Read by every store of the cluster (`assertOpen`), which refuses work once this is closed. */
  readonly #machine: Machine<FilesState>

  constructor(deps: SubsystemDeps, locks: Locks) {
    const root = new Root(deps.options.files.root)
    const log = deps.log.child({ subsystem: 'files' })
    const machine = filesMachine()
    super(
      {
        root,
        locks,
        members: deps.members,
        log,
        maxFileBytes: deps.options.files.maxFileBytes,
        assertOpen: (what) => {
          if (machine.is('closed')) throw new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', ['closed', what])
        },
      },
      [],
    )
    this.#machine = machine
    this.#sweeper = new Sweeper({
      root, members: deps.members, locks, events: deps.events, log,
      tempMaxAgeMs: deps.options.files.tempMaxAgeMs,
      // A writer missing from this instance's view may just have joined: give the view time to learn of it.
      graceMs: Math.max(10_000, 2 * deps.options.failAfterMs),
    })
  }

  /** Part of the subsystem lifecycle: called by the cluster, not by applications. */
  async start(): Promise<void> {
    this.#machine.to('open')
    this.#sweeper.start()
  }

  /**
   * Sweeps temporary files left by writers that are gone, now (it also runs by itself at start,
   * when a member goes down and every ten minutes). Resolves with how many were removed, or `null`
   * when another instance was sweeping.
   */
  sweep(): Promise<number | null> {
    return this.#sweeper.run()
  }

  /** Part of the subsystem lifecycle: called by the cluster, not by applications. */
  async close(): Promise<void> {
    if (this.#machine.is('closed')) return
    this.#machine.to('closed')
    await this.#sweeper.stop()
  }
}
