/**
 * The dashboard's control commands, sent on `channels.dashboardControl`: actions an operator takes
 * on the page that only the instance itself can carry out (drain). Anyone who can publish on the
 * bus can already write the database, so the channel adds no new authority; the dashboard checks
 * the operator first.
 */

/** Drain `instanceId`; with `epoch`, only while that instance still runs under that epoch. */
export interface DrainCommand {
  readonly op: 'drain'
  readonly instanceId: string
  readonly epoch?: number
}

export type ControlCommand = DrainCommand

export function encodeCommand(cmd: ControlCommand): string {
  return JSON.stringify(cmd)
}

/** The command in `data`, or null when it is not one this version knows (ignored, not an error). */
export function decodeCommand(data: string): ControlCommand | null {
  let v: unknown
  try {
    v = JSON.parse(data)
  } catch {
    return null
  }
  if (typeof v !== 'object' || v === null) return null
  const o = v as Record<string, unknown>
  switch (o.op) {
    case 'drain':
      if (typeof o.instanceId !== 'string') return null
      if (o.epoch !== undefined && typeof o.epoch !== 'number') return null
      return o.epoch === undefined ? { op: 'drain', instanceId: o.instanceId } : { op: 'drain', instanceId: o.instanceId, epoch: o.epoch }
    default:
      return null
  }
}
