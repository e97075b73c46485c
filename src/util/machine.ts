/**
 * A guarded state machine: the states of one machine and, for each, the states it may be entered
 * from, declared in one block at the top of the file that owns it. `to(next)` moves only along a
 * declared edge and throws `CHORUS_ERR_INTERNAL_TRANSITION` otherwise, so a wrong transition is a
 * loud bug instead of a silent state. Moving to the current state is a no-op (nothing changes).
 *
 * Usage, in the owner's file:
 *   const enteredFrom = { starting: [], up: ['starting'], closed: ['starting', 'up'] } as const
 *   readonly #machine = new Machine('locks', enteredFrom, 'starting', (from, to) => …)
 */
import { ChorusError } from '../errors.js'

export type Transitions<S extends string> = { readonly [K in S]: readonly S[] }

export class Machine<S extends string> {
  readonly #name: string
  readonly #enteredFrom: Transitions<S>
  readonly #onChange: ((from: S, to: S) => void) | undefined
  #state: S

  constructor(name: string, enteredFrom: Transitions<S>, initial: S, onChange?: (from: S, to: S) => void) {
    this.#name = name
    this.#enteredFrom = enteredFrom
    this.#state = initial
    this.#onChange = onChange
  }

  get state(): S {
    return this.#state
  }

  /** Whether the machine is in one of `states`. */
  is(...states: readonly S[]): boolean {
    return states.includes(this.#state)
  }

  /** Whether `to(next)` would be accepted now. */
  can(next: S): boolean {
    return next === this.#state || this.#enteredFrom[next].includes(this.#state)
  }

  /** Moves to `next`; throws `CHORUS_ERR_INTERNAL_TRANSITION` when `next` may not be entered from here. */
  to(next: S): void {
    const from = this.#state
    if (from === next) return
    if (!this.#enteredFrom[next].includes(from)) {
      throw new ChorusError('CHORUS_ERR_INTERNAL_TRANSITION', [this.#name, from, next], { details: { machine: this.#name, from, to: next } })
    }
    this.#state = next
    this.#onChange?.(from, next)
  }
}
