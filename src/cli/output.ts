/**
 * The one log stream of `chorus up`, on stdout: its own lines and every line of every process it
 * runs, in one format. `pretty` (the default): each line prefixed with the process name, pino
 * records rendered by `prettyLine` (time, level, message, fields), other lines as printed; colour
 * only on a terminal unless `FORCE_COLOR`, never with `NO_COLOR`. `json`: one pino record per line,
 * each with `process` set to the name; a plain line becomes a record of its own (info from stdout,
 * error from stderr). Lines longer than MAX_LINE are cut into pieces of that size.
 */
import { levelNumber, parseRecord, prettyRecord, type LogFormat, type Paint } from '../log.js'

export const MAX_LINE = 64 * 1024
const useColor = !process.env.NO_COLOR && (!!process.env.FORCE_COLOR || !!process.stdout.isTTY)
const palette = [36, 35, 33, 32, 34, 96, 95, 93]

export const paint: Paint = (text, code) => (useColor ? `\u001b[${code}m${text}\u001b[0m` : text)

export type Level = 'info' | 'warn' | 'error'

export class Output {
  readonly #format: LogFormat
  readonly #width: number
  readonly #colours = new Map<string, number>()

  /** `names`: every process that may print, `chorus` first; sets the prefix width and colours. */
  constructor(format: LogFormat, names: readonly string[]) {
    this.#format = format
    this.#width = Math.max(...names.map((n) => n.length))
    names.forEach((n, i) => this.#colours.set(n, palette[(i + palette.length - 1) % palette.length]!))
  }

  /** A line of `chorus up` itself. */
  say(level: Level, msg: string): void {
    const rec = { level: levelNumber[level], time: Date.now(), pid: process.pid, process: 'chorus', msg }
    this.#write('chorus', this.#format === 'json' ? JSON.stringify(rec) : prettyRecord(rec, paint))
  }

  /** A line printed by the process `name` on `stream`. */
  line(name: string, text: string, stream: 'stdout' | 'stderr'): void {
    const rec = parseRecord(text)
    if (this.#format === 'pretty') return this.#write(name, rec ? prettyRecord(rec, paint) : text)
    if (rec) return this.#write(name, JSON.stringify({ ...rec, process: name }))
    this.#write(name, JSON.stringify({ level: stream === 'stderr' ? levelNumber.error : levelNumber.info, time: Date.now(), process: name, msg: text }))
  }

  #write(name: string, text: string): void {
    if (this.#format === 'json') process.stdout.write(text + '\n')
    else process.stdout.write(paint(name.padEnd(this.#width), this.#colours.get(name) ?? 0) + ' │ ' + text + '\n')
  }
}

/** Calls `onLine` with each line of `stream` (without its newline), cutting lines longer than MAX_LINE. */
export function eachLine(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let buffered = ''
  stream.setEncoding('utf8')
  stream.on('data', (chunk: string) => {
    buffered += chunk
    let end: number
    while ((end = buffered.indexOf('\n')) >= 0) {
      onLine(buffered.slice(0, end).replace(/\r$/, ''))
      buffered = buffered.slice(end + 1)
    }
    while (buffered.length > MAX_LINE) {
      onLine(buffered.slice(0, MAX_LINE))
      buffered = buffered.slice(MAX_LINE)
    }
  })
  stream.on('end', () => {
    if (buffered) onLine(buffered)
    buffered = ''
  })
}
