/**
 * Prefixed, coloured output for processes started by `chorus up`. pino JSON lines are rendered
 * readably (time, level, message, fields); anything else is passed through. `NO_COLOR` is honoured,
 * and colour is used only on a terminal unless `FORCE_COLOR` is set.
 */
const useColor = !process.env.NO_COLOR && (!!process.env.FORCE_COLOR || !!process.stdout.isTTY)
const palette = [36, 35, 33, 32, 34, 96, 95, 93]
const levels: Record<number, [string, number]> = { 10: ['TRACE', 90], 20: ['DEBUG', 90], 30: ['INFO', 32], 40: ['WARN', 33], 50: ['ERROR', 31], 60: ['FATAL', 41] }
const hidden = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'instance'])

export function paint(text: string, code: number): string {
  return useColor ? `\u001b[${code}m${text}\u001b[0m` : text
}

export function prefixer(name: string, index: number, width: number): (line: string) => string {
  const tag = paint(name.padEnd(width), palette[index % palette.length]!) + ' │ '
  return (line) => tag + render(line)
}

function render(line: string): string {
  if (!line.startsWith('{')) return line
  let rec: Record<string, unknown>
  try {
    rec = JSON.parse(line) as Record<string, unknown>
  } catch {
    return line
  }
  if (typeof rec.level !== 'number' || !('msg' in rec)) return line
  const [label, color] = levels[rec.level] ?? ['LOG', 0]
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
