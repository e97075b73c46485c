/**
 * Topics: typed publish/subscribe across every instance, fire-and-forget (at-most-once, ordered per
 * publisher), with gap notices when this instance may have missed messages.
 */
import type { Bus } from '../bus/bus.js'
import { channels } from '../bus/channels.js'
import type { Events, GapReason } from '../events.js'
import { parseOptions } from '../util/parse-options.js'
import { encodeChecked, json, type Codec } from './codec.js'
import { topicOptions, type TopicOptions } from './options.js'

export type { TopicOptions } from './options.js'

export interface TopicMessageMeta {
  /** True when this instance published the message. */
  readonly local: boolean
  readonly publisher: string
}

export class Topic<T = unknown> {
  readonly name: string
  readonly #bus: Bus
  readonly #events: Events
  readonly #codec: Codec<T>
  readonly #limit: number
  readonly #channel: string

  constructor(name: string, opts: TopicOptions<T>, deps: { bus: Bus; events: Events; maxPayloadBytes: number }) {
    const o = parseOptions(topicOptions, opts)
    this.name = name
    this.#bus = deps.bus
    this.#events = deps.events
    this.#codec = (o.codec as Codec<T> | undefined) ?? (json as Codec<T>)
    this.#limit = Math.min(o.maxMessageBytes ?? deps.maxPayloadBytes, deps.maxPayloadBytes)
    this.#channel = channels.topic(name)
  }

  /** Sends to every subscriber on every instance; resolves once the message left this instance. */
  publish(message: T): Promise<void> {
    let text: string
    try {
      text = encodeChecked(this.#codec, message, this.#limit)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#bus.publish(this.#channel, text)
  }

  /** Returns the unsubscribe function. */
  subscribe(fn: (message: T, meta: TopicMessageMeta) => void): () => void {
    return this.#bus.subscribe(this.#channel, (data, meta) => {
      fn(this.#codec.decode(data), { local: meta.local, publisher: meta.publisher })
    })
  }

  /** Called when this instance may have missed messages (on this topic or any other). */
  onGap(fn: (info: { reason: GapReason }) => void): () => void {
    return this.#events.on('bus:gap', (e) => fn({ reason: e.reason }))
  }
}
