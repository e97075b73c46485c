/**
 * The bus transport: how one instance's messages reach every instance, itself included.
 *
 * Rules every transport keeps:
 * - **Delivery** is at-most-once. A message may be lost (connection drop, overload); it is never
 *   delivered twice and never altered.
 * - **Ordering** is per publisher: messages given to `send` on one transport are delivered to each
 *   receiver in the order they were sent. Nothing is promised across publishers.
 * - **Loss is reported**: when the transport may have missed messages (its connection dropped and
 *   came back), it calls `handlers.reconnected()` once it receives again. Sequence-gap detection
 *   happens above the transport, in `Bus`.
 * - **Threading**: `send` never blocks and never throws for transient failures; it queues. Handlers
 *   are called on the event loop, one message at a time, and must not block. A handler that throws
 *   does not stop delivery.
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
  close(): Promise<void>
}
