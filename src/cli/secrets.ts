/**
 * Secrets given as arguments show in `ps` to every local user. Each secret option of `chorus` has a
 * file twin (`--password-file`) and an environment variable; a secret given as an argument still
 * works, with a one-line warning on stderr that names both alternatives (and never the secret).
 */
import { readFileSync } from 'node:fs'
import { Option, type Command } from 'commander'
import { EXIT } from './report.js'

interface SecretOption {
  /** The option's attribute as commander stores it, and its flag. */
  readonly key: string
  readonly flag: string
  readonly fileKey: string
  readonly fileFlag: string
  /** The environment variable each command reads when neither option is given. */
  readonly env: string
  readonly what: string
  /** Whether a value holds a secret at all: a database URL without a password is harmless in ps. */
  holdsSecret(value: string): boolean
}

/** `user:password@` in a URL's authority (also of a string that only looks like one), or `password=` in its query. */
const urlHasPassword = (url: string): boolean => /^(?:[a-z][a-z0-9+.-]*:\/\/)?[^/@?#:]*:[^/?#]+@/i.test(url) || /[?&]password=/i.test(url)

const SECRETS: readonly SecretOption[] = [
  { key: 'password', flag: '--password', fileKey: 'passwordFile', fileFlag: '--password-file', env: 'CHORUS_DASHBOARD_PASSWORD', what: 'the dashboard password', holdsSecret: (v) => v.length > 0 },
  { key: 'databaseUrl', flag: '--database-url', fileKey: 'databaseUrlFile', fileFlag: '--database-url-file', env: 'DATABASE_URL', what: 'the database URL', holdsSecret: urlHasPassword },
]

/** Gives each secret option of `command` its `-file` twin, which conflicts with it. */
export function addSecretFileOptions(command: Command): void {
  for (const s of SECRETS) {
    if (!command.options.some((o) => o.long === s.flag)) continue
    command.addOption(new Option(`${s.fileFlag} <path>`, `read ${s.what} from this file (its first line), out of sight of ps`).conflicts(s.key))
  }
}

/** The `-file` twins read into their options, and a warning for each secret given as an argument. Runs before each action. */
export function resolveSecretOptions(command: Command): void {
  for (const s of SECRETS) {
    const path = command.getOptionValue(s.fileKey) as string | undefined
    if (path !== undefined) {
      command.setOptionValueWithSource(s.key, readSecretFile(command, s, path), 'config')
      continue
    }
    const value = command.getOptionValue(s.key) as unknown
    if (command.getOptionValueSource(s.key) === 'cli' && typeof value === 'string' && s.holdsSecret(value)) {
      const what = s.key === 'databaseUrl' ? `${s.flag} holds a password,` : s.flag + ' is'
      process.stderr.write(`chorus: warning: ${what} visible to every local user in ps; use ${s.fileFlag} or ${s.env}\n`)
    }
  }
}

function readSecretFile(command: Command, s: SecretOption, path: string): string {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message
    return command.error(`cannot read ${s.fileFlag} ${path}: ${code}`, { exitCode: EXIT.usage, code: 'chorus.secretFile' })
  }
  // The first line: `echo secret > file` leaves a newline that is no part of the secret.
  const value = text.split(/\r?\n/, 1)[0]!
  if (!value) return command.error(`${s.fileFlag} ${path} is empty`, { exitCode: EXIT.usage, code: 'chorus.secretFile' })
  return value
}
