/** Structured logging: pino, to stderr so that command output on stdout stays machine-readable. */
import { pino, type Logger } from 'pino'

export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({ level, base: { pid: process.pid, ...bindings } }, pino.destination({ dest: 2, sync: false }))
}
