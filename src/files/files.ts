/**
 * Shared files (`cluster.files`): a directory every instance mounts, changed only atomically and
 * under path locks, so that what one instance writes is whole for all and a removal never leaves a
 * file without its directories. Owns the sweeper of temporary files left by crashed writers.
 */
import type { Locks } from '../locks/locks.js'
import { ChorusError } from '../errors.js'
import type { Subsystem, SubsystemDeps } from '../subsystem.js'
import { Root } from './root.js'
import { FileStore, type FilesContext } from './store.js'
import { Sweeper } from './sweep.js'

/**
 * - `new`: constructed, not started (usable: the root is created on first use).
 * - `open`: started; sweeping.
 * - `closed`: every operation refused.
 */
type State = 'new' | 'open' | 'closed'

export class Files extends FileStore implements Subsystem {
  readonly name = 'files'
  readonly #sweeper: Sweeper
  /** Shared with every area's store, which must refuse work once this closes. */
  readonly #gate: { closed: boolean }
  #state: State = 'new'

  constructor(deps: SubsystemDeps, locks: Locks) {
    const root = new Root(deps.options.files.root)
    const log = deps.log.child({ subsystem: 'files' })
    const gate = { closed: false }
    const ctx: FilesContext = {
      root,
      locks,
      members: deps.members,
      log,
      maxFileBytes: deps.options.files.maxFileBytes,
      assertOpen: (what) => {
        if (gate.closed) throw new ChorusError('CHORUS_ERR_CLUSTER_CLOSED', ['closed', what])
      },
    }
    super(ctx, [])
    this.#gate = gate
    this.#sweeper = new Sweeper({
      root, members: deps.members, locks, events: deps.events, log,
      tempMaxAgeMs: deps.options.files.tempMaxAgeMs,
      // A writer missing from this instance's view may just have joined: give the view time to learn of it.
      graceMs: Math.max(10_000, 2 * deps.options.failAfterMs),
    })
  }

  /** @internal */
  async start(): Promise<void> {
    this.#setState('open')
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

  /** @internal */
  async close(): Promise<void> {
    if (this.#state === 'closed') return
    this.#setState('closed')
    this.#gate.closed = true
    await this.#sweeper.stop()
  }

  #setState(next: State): void {
    switch (next) {
      case 'new':
      case 'open':
      case 'closed':
        break
      default: {
        const never: never = next
        throw new Error(`unknown state ${String(never)}`)
      }
    }
    this.#state = next
  }
}
