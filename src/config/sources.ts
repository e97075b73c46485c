/**
 * The configuration directory: one folder of YAML or JSON files, named like a config server's —
 * `application.yml` (every app), `application-{profile}.yml`, `{app}.yml`, `{app}-{profile}.yml`.
 * Each file becomes one source, a flat layer of dotted keys named after the file without its
 * extension; a string value written `secret:…` marks its key secret. Which sources apply to an
 * instance, and in which order, is `viewSources`' to say.
 */
import { readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { parse } from 'yaml'
import { ChorusError } from '../errors.js'
import { flatten, type Layer } from './keys.js'

/** The clear form of a version: its sources, and which keys are secret. */
export interface Doc {
  readonly sources: Readonly<Record<string, Layer>>
  readonly secrets: ReadonlySet<string>
}

export const RUNTIME = 'runtime'
export const SECRET_PREFIX = 'secret:'
export const MAX_FILE_BYTES = 1024 * 1024
export const MAX_FILES = 200
const FILE = /^([A-Za-z0-9_][A-Za-z0-9_.-]*)\.(ya?ml|json)$/
export const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.]*(?:-[A-Za-z0-9_.]+)*$/

/** Reads every configuration file of `dir` (other files and subdirectories are ignored). */
export async function loadDirectory(dir: string): Promise<Doc> {
  let names: string[]
  try {
    names = (await readdir(dir)).filter((n) => FILE.test(n)).sort()
  } catch (err) {
    throw new ChorusError('CHORUS_ERR_CONFIG_SOURCE_INVALID', [dir, (err as NodeJS.ErrnoException).code ?? (err as Error).message], { cause: err, details: { file: dir } })
  }
  if (names.length > MAX_FILES) throw new ChorusError('CHORUS_ERR_CONFIG_SOURCE_INVALID', [dir, `more than ${MAX_FILES} configuration files`], { details: { file: dir } })
  const files: Record<string, string> = {}
  for (const name of names) {
    const path = join(dir, name)
    const info = await stat(path)
    if (!info.isFile()) continue
    if (info.size > MAX_FILE_BYTES) throw new ChorusError('CHORUS_ERR_CONFIG_SOURCE_INVALID', [path, `larger than ${MAX_FILE_BYTES} bytes`], { details: { file: path } })
    files[name] = await readFile(path, 'utf8')
  }
  return parseFiles(files)
}

/** Parses named file contents (`{'application.yml': '…'}`) into sources; the directory loader and tests share it. */
export function parseFiles(files: Readonly<Record<string, string>>): Doc {
  const sources: Record<string, Layer> = {}
  const secrets = new Set<string>()
  for (const [name, text] of Object.entries(files)) {
    const m = FILE.exec(name)
    if (!m) throw new ChorusError('CHORUS_ERR_CONFIG_SOURCE_INVALID', [name, 'a configuration file is named NAME.yml, NAME.yaml or NAME.json'], { details: { file: name } })
    const base = m[1]!
    if (base === RUNTIME) throw new ChorusError('CHORUS_ERR_CONFIG_SOURCE_INVALID', [name, `"${RUNTIME}" is the name of the runtime layer`], { details: { file: name } })
    if (sources[base]) throw new ChorusError('CHORUS_ERR_CONFIG_SOURCE_INVALID', [name, `another file is also named ${base}`], { details: { file: name } })
    let doc: unknown
    try {
      doc = m[2] === 'json' ? JSON.parse(text) : parse(text, { uniqueKeys: true, maxAliasCount: 100 })
    } catch (err) {
      throw new ChorusError('CHORUS_ERR_CONFIG_SOURCE_INVALID', [name, (err as Error).message.split('\n')[0]], { cause: err, details: { file: name } })
    }
    const layer = flatten(doc ?? {}, name)
    for (const [k, v] of Object.entries(layer)) {
      if (typeof v === 'string' && v.startsWith(SECRET_PREFIX)) {
        layer[k] = v.slice(SECRET_PREFIX.length)
        secrets.add(k)
      }
    }
    sources[base] = layer
  }
  return { sources, secrets }
}

/** A view: which app an instance runs and its active profiles (in order, last wins). */
export interface View {
  readonly app: string | null
  readonly profiles: readonly string[]
}

/** The sources that apply to `view`, lowest precedence first; the runtime layer is always last. */
export function viewSources(view: View): string[] {
  const names = ['application', ...view.profiles.map((p) => `application-${p}`)]
  if (view.app) names.push(view.app, ...view.profiles.map((p) => `${view.app}-${p}`))
  names.push(RUNTIME)
  return names
}

export function viewLabel(view: View): string {
  return `${view.app ?? 'application'}${view.profiles.length ? ` [${view.profiles.join(',')}]` : ''}`
}
