/**
 * The bus transport: how one instance's messages reach every instance, itself included.
 *
 * Rules every transport keeps:
 * - **Delivery** is at-most-once. A message may be lost (connection drop, overload); it is never
 *   delivered twice and never altered.
 * - **Ordering** is per publisher: messages given to `send` on one transport are delivered to each
 *   receiver in the order they were sent. Nothing is promised across publishers.
 * - **Loss is reported**: when the transport may have missed messages (its connection dropped and
 *   came back), it calls `handlers.disconnected(err)` once when the loss begins and
 *   `handlers.reconnected()` once it receives again — only after it is subscribed again, so every
 *   message sent before that call was either delivered or is covered by this gap. A transport must
 *   never drop a message silently after reporting `reconnected`: messages it cannot send while its
 *   own connection is down wait (bounded) or fail their `send`. Sequence-gap detection happens
 *   above the transport, in `Bus`.
 * - **Threading**: `send` never blocks and never throws for transient failures; it queues. Handlers
 *   are called on the event loop, one message at a time, and must not block. A handler that throws
 *   does not stop delivery.
 * - **Limits**: `queuedBytes` stays bounded (a transport refuses with `CHORUS_ERR_BUS_QUEUE_FULL`
 *   past its own limit; `Bus` refuses earlier, at `bus.maxQueueBytes`). A transport whose server
 *   caps message size (Redis, NATS, the memory hub) exposes `maxEnvelopeBytes` once started,
 *   measures an envelope as its frame (`frameBytes` in frame.ts) and refuses a larger one with
 *   `CHORUS_ERR_BUS_PAYLOAD_TOO_LARGE` (it then used a sequence number: receivers see a gap).
 * - **Self-delivery**: every instance receives its own messages, through the same path as others'.
 * - **Close** releases every connection, timer and socket; `send` afterwards rejects with
 *   `CHORUS_ERR_BUS_CLOSED`.
 *
 * Transports: postgres.ts (default), redis.ts, nats.ts, memory.ts; select.ts picks one from a URL.
 * test/contract/bus.contract.ts checks every one against these rules.
 */

/** One message on the bus. `seq` starts at 1 and increases by one per publisher. */
export interface Envelope {
  readonly publisher: string
  readonly seq: number
  readonly channel: string
  readonly data: string
}

export interface TransportHandlers {
  deliver(envelope: Envelope): void
  /** The transport lost its receiving connection and has it back: messages may have been missed. */
  reconnected(): void
  /** The receiving connection was lost (reported once per loss). */
  disconnected(error: Error): void
  /** A message named a payload that could no longer be fetched. */
  lost(publisher: string, seq: number): void
}

export interface Transport {
  /** Starts receiving; resolves when messages sent from now on will be delivered. */
  start(handlers: TransportHandlers): Promise<void>
  /** Queues `envelope` for every receiver. Resolves once it has left this instance (or rejects if it could not). */
  send(envelope: Envelope, bytes: number): Promise<void>
  /** Bytes queued and not yet sent. */
  readonly queuedBytes: number
  /**
   * The largest envelope the transport carries, as `frameBytes` (src/bus/frame.ts) measures it, when
   * it has a limit of its own (a broker's message size). The bus refuses a larger message before it
   * numbers it, so a refusal never shows receivers a sequence gap.
   */
  readonly maxEnvelopeBytes?: number
  close(): Promise<void>
}
