/**
 * Structured logging: pino, to stderr so that command output on stdout stays machine-readable. One
 * record format everywhere: JSON lines (the default, for machines), or with `CHORUS_LOG_FORMAT=pretty`
 * the same records rendered as `time LEVEL message field=value…` — the rendering `chorus up` applies
 * to every process it runs (`prettyLine`), so one terminal shows one format.
 */
import { pino, type Logger } from 'pino'

export type LogFormat = 'pretty' | 'json'

export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  const options = { level, base: { pid: process.pid, ...bindings } }
  if (process.env.CHORUS_LOG_FORMAT === 'pretty') return pino(options, { write: (line: string) => void process.stderr.write(prettyLine(line) + '\n') })
  return pino(options, pino.destination({ dest: 2, sync: false }))
}

/** Colours a piece of text (an ANSI SGR code), or leaves it as it is. */
export type Paint = (text: string, code: number) => string

const plain: Paint = (text) => text
const levels: Record<number, [string, number]> = { 10: ['TRACE', 90], 20: ['DEBUG', 90], 30: ['INFO', 32], 40: ['WARN', 33], 50: ['ERROR', 31], 60: ['FATAL', 41] }
const hidden = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'instance', 'process'])

/** The numeric pino level of a label (`info` → 30). */
export const levelNumber = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 } as const

/** A pino JSON line rendered for people; any other line is returned as it is. */
export function prettyLine(line: string, paint: Paint = plain): string {
  const rec = parseRecord(line)
  return rec ? prettyRecord(rec, paint) : line.replace(/\n$/, '')
}

/** The record of a pino JSON line, or null when the line is not one. */
export function parseRecord(line: string): Record<string, unknown> | null {
  if (!line.startsWith('{')) return null
  try {
    const rec = JSON.parse(line) as unknown
    return rec && typeof rec === 'object' && typeof (rec as { level?: unknown }).level === 'number' && 'msg' in rec ? (rec as Record<string, unknown>) : null
  } catch {
    return null
  }
}

export function prettyRecord(rec: Record<string, unknown>, paint: Paint = plain): string {
  const [label, color] = levels[rec.level as number] ?? ['LOG', 0]
  const time = typeof rec.time === 'number' ? new Date(rec.time).toISOString().slice(11, 23) : ''
  const fields = Object.entries(rec)
    .filter(([k]) => !hidden.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(k === 'err' ? summarizeErr(v) : v)}`)
    .join(' ')
  return `${paint(time, 90)} ${paint(label.padEnd(5), color)} ${String(rec.msg)}${fields ? ' ' + paint(fields, 90) : ''}`
}

function summarizeErr(v: unknown): unknown {
  if (v && typeof v === 'object' && 'message' in v) {
    const e = v as { type?: string; message: string; code?: string }
    return `${e.type ?? 'Error'}${e.code ? ` ${e.code}` : ''}: ${e.message}`
  }
  return v
}
