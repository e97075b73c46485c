/**
 * How `chorus` ends on an error: one line on stderr — `chorus: <code> <message>` for a ChorusError —
 * the stack only with `--debug`, never a password, and an exit code that says which kind of failure it was.
 */
import { isChorusError, type ErrorCode } from '../errors.js'

/** The exit codes of `chorus`, documented in `chorus --help` and docs/guide.md. */
export const EXIT = {
  ok: 0,
  /** Anything else failed. */
  failure: 1,
  /** The command line or the environment is wrong: an unknown option, a bad value, nothing to run. */
  usage: 2,
  /** PostgreSQL could not be reached: not a URL, refused, unknown host, wrong password, no such database. */
  database: 3,
} as const

export const EXIT_HELP = `
Exit codes:
  0  success
  1  failure
  2  usage: a bad command line, option or environment variable
  3  PostgreSQL unreachable (CHORUS_ERR_DB_CONNECT): not a URL, refused, unknown host, wrong password,
     no such database, timed out

Errors print one line, "chorus: <code> <message>"; --debug adds the stack.`

const usage = new Set<ErrorCode>([
  'CHORUS_ERR_OPTIONS_INVALID',
  'CHORUS_ERR_CLI_NO_CLUSTER',
  'CHORUS_ERR_CLI_APP_NOT_FOUND',
  'CHORUS_ERR_CLI_APP_NOT_RUNNABLE',
  'CHORUS_ERR_CLI_PORT_IN_USE',
  'CHORUS_ERR_DASHBOARD_PASSWORD_MISSING',
  'CHORUS_ERR_DASHBOARD_PASSWORD_WEAK',
])

export function exitCodeOf(err: unknown): number {
  if (isChorusError(err, 'CHORUS_ERR_DB_CONNECT')) return EXIT.database
  if (isChorusError(err) && usage.has(err.code)) return EXIT.usage
  return EXIT.failure
}

/** Masks `user:secret@` in any URL a message may quote; the `user:password@` of a usage hint stays. */
function mask(text: string): string {
  return text.replace(/(\/\/[^/:@\s]*:)(?!password@)[^@\s]*@/g, '$1***@')
}

function firstLine(text: string): string {
  return text.split('\n')[0]!.trim()
}

/** The lines `chorus` prints for `err`: one, or with `debug` the stacks of it and its causes too. */
export function describeFailure(err: unknown, debug: boolean): string[] {
  const lines: string[] = []
  if (isChorusError(err)) lines.push(`chorus: ${err.code} ${firstLine(err.message)}`)
  else {
    const e = err instanceof Error ? err : null
    const what = e ? `${e.name}: ${firstLine(e.message)}` : `non-error thrown: ${firstLine(String(err))}`
    lines.push(debug ? `chorus: unexpected ${what}` : `chorus: unexpected ${what} (run with --debug for the stack)`)
  }
  if (debug) {
    let cause: unknown = err
    for (let depth = 0; cause !== undefined && cause !== null && depth < 5; depth++) {
      const text = cause instanceof Error ? (cause.stack ?? `${cause.name}: ${cause.message}`) : String(cause)
      lines.push(...(depth === 0 ? text : `caused by: ${text}`).split('\n'))
      cause = cause instanceof Error ? cause.cause : undefined
    }
  }
  return lines.map(mask)
}

/** Prints `err` as `chorus` does and exits with its code. */
export function fail(err: unknown, debug: boolean): never {
  process.stderr.write(describeFailure(err, debug).join('\n') + '\n')
  process.exit(exitCodeOf(err))
}
