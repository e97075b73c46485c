// A strict reader of the Prometheus text exposition format (0.0.4): every line must be a HELP, a
// TYPE, a comment or a sample of a declared family; names, label sets, escapes and values must be
// well formed; histogram buckets must be cumulative and end at +Inf = _count. It throws on the
// first violation, naming the line, so a malformed /metrics fails the test that reads it.

export interface Sample {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
}

export interface Family {
  readonly name: string
  readonly type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped'
  help: string | null
  readonly samples: Sample[]
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/
// Values are what Go's strconv.ParseFloat reads (Prometheus' own parser): decimals, and NaN, Inf,
// Infinity in any letter case (prom-client writes "Nan").
const VALUE = /^(?:[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|[+-]?(?:inf|infinity)|nan)$/i

export function parsePrometheus(text: string): Map<string, Family> {
  const families = new Map<string, Family>()
  let current: Family | null = null
  const lines = text.split('\n')
  if (lines.at(-1) !== '') throw new Error('the exposition must end with a newline')
  lines.forEach((line, index) => {
    const where = `line ${index + 1}: ${JSON.stringify(line.slice(0, 120))}`
    if (line === '') return
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(line)
      if (!m) return // a plain comment
      const [, kind, name, rest = ''] = m
      if (!NAME.test(name!)) throw new Error(`bad metric name in ${where}`)
      if (kind === 'TYPE') {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest)) throw new Error(`bad type in ${where}`)
        const existing = families.get(name!)
        if (existing && (existing.samples.length > 0 || existing.type !== 'untyped')) throw new Error(`TYPE given twice or after samples in ${where}`)
        current = { name: name!, type: rest as Family['type'], help: existing?.help ?? null, samples: [] }
        families.set(name!, current)
      } else {
        const f = families.get(name!) ?? { name: name!, type: 'untyped' as const, help: null, samples: [] }
        if (f.help !== null) throw new Error(`HELP given twice in ${where}`)
        f.help = rest
        families.set(name!, f)
        current = f
      }
      return
    }
    const sample = parseSample(line, where)
    const family = familyOf(sample.name, families)
    if (!family) throw new Error(`sample of an undeclared family in ${where}`)
    if (family !== current) throw new Error(`samples of ${family.name} are not together (${where})`)
    family.samples.push(sample)
  })
  for (const f of families.values()) if (f.type === 'histogram') checkHistogram(f)
  return families
}

function parseSample(line: string, where: string): Sample {
  const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)(?: (-?\d+))?$/.exec(line)
  if (!m) throw new Error(`malformed sample in ${where}`)
  const [, name, rawLabels, rawValue] = m
  if (!VALUE.test(rawValue!)) throw new Error(`bad value in ${where}`)
  const labels: Record<string, string> = {}
  if (rawLabels) {
    let s = rawLabels.slice(1, -1)
    while (s.length > 0) {
      const lm = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"(,?)/.exec(s)
      if (!lm || !LABEL.test(lm[1]!)) throw new Error(`malformed label set in ${where}`)
      if (lm[1]! in labels) throw new Error(`label ${lm[1]} repeated in ${where}`)
      labels[lm[1]!] = lm[2]!.replace(/\\(["\\n])/g, (_, c: string) => (c === 'n' ? '\n' : c))
      s = s.slice(lm[0].length)
      if (lm[3] === '' && s.length > 0) throw new Error(`missing comma between labels in ${where}`)
    }
  }
  const special = rawValue!.toLowerCase().replace(/^\+/, '')
  const value = special === 'inf' || special === 'infinity' ? Infinity : special === '-inf' || special === '-infinity' ? -Infinity : special === 'nan' ? NaN : Number(rawValue)
  return { name: name!, labels, value }
}

function familyOf(name: string, families: Map<string, Family>): Family | undefined {
  const direct = families.get(name)
  if (direct && direct.type !== 'histogram' && direct.type !== 'summary') return direct
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!name.endsWith(suffix)) continue
    const f = families.get(name.slice(0, -suffix.length))
    if (f && (f.type === 'histogram' || (f.type === 'summary' && suffix !== '_bucket'))) return f
  }
  if (direct?.type === 'summary') return direct
  return undefined
}

function checkHistogram(f: Family): void {
  const series = new Map<string, { buckets: [number, number][]; count?: number }>()
  for (const s of f.samples) {
    const { le, ...rest } = s.labels
    const key = JSON.stringify(Object.entries(rest).sort())
    const entry = series.get(key) ?? { buckets: [] }
    series.set(key, entry)
    if (s.name.endsWith('_bucket')) {
      if (le === undefined) throw new Error(`${f.name}: bucket without le`)
      entry.buckets.push([le === '+Inf' ? Infinity : Number(le), s.value])
    } else if (s.name.endsWith('_count')) entry.count = s.value
  }
  for (const [key, e] of series) {
    for (let i = 1; i < e.buckets.length; i++) {
      if (e.buckets[i]![0] <= e.buckets[i - 1]![0] || e.buckets[i]![1] < e.buckets[i - 1]![1]) throw new Error(`${f.name}${key}: buckets not cumulative`)
    }
    const last = e.buckets.at(-1)
    if (!last || last[0] !== Infinity || last[1] !== e.count) throw new Error(`${f.name}${key}: +Inf bucket missing or not equal to _count`)
  }
}

/** The sum of the samples named `name` (a family, or a histogram's `_count`, …) whose labels include `match`; 0 when none. */
export function total(families: Map<string, Family>, name: string, match: Record<string, string> = {}): number {
  let sum = 0
  for (const f of families.values()) {
    for (const s of f.samples) if (s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v)) sum += s.value
  }
  return sum
}
