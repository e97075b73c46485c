// docs/guide.md and the real `chorus … --help` (bin/chorus.js, built) say the same: every option of
// every command (and subcommand) is in the guide's section of that command, or in a page that
// section links to; every option a command's section names exists for that command; every option
// named anywhere else in the CLI part of the guide exists for some command.
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { beforeAll, describe, expect, it } from 'vitest'
import { bin, env, root } from '../helpers/cli.js'

const run = promisify(execFile)
const GLOBAL = ['--debug', '--version', '--help']

async function help(path: string[]): Promise<string> {
  return (await run(process.execPath, [bin, ...path, '--help'], { env: env(), timeout: 120_000 })).stdout
}

/** The lines of a help text's block (`Options:`, `Commands:`): up to the first empty or unindented line. */
function block(text: string, title: string): string[] {
  const lines = text.split('\n')
  const start = lines.indexOf(`${title}:`)
  if (start < 0) return []
  const rest = lines.slice(start + 1)
  const end = rest.findIndex((l) => !l.startsWith(' '))
  return end < 0 ? rest : rest.slice(0, end)
}

/** The `--options` of a help text. */
function optionsOf(text: string): string[] {
  return block(text, 'Options').flatMap((l) => /^ {2}(?:-\w, )?(--[a-z][a-z0-9-]*)/.exec(l)?.[1] ?? []).filter((o) => o !== '--help')
}

/** The subcommands of a help text, without `help`. */
function commandsOf(text: string): string[] {
  return block(text, 'Commands').flatMap((l) => /^ {2}([a-z][a-z-]*)/.exec(l)?.[1] ?? []).filter((c) => c !== 'help')
}

/** Every option of `chorus <command>` and of its subcommands, recursively. */
async function allOptions(path: string[]): Promise<string[]> {
  const text = await help(path)
  const nested = await Promise.all(commandsOf(text).map((sub) => allOptions([...path, sub])))
  return [...new Set([...optionsOf(text), ...nested.flat()])]
}

const named = (text: string) => new Set([...text.matchAll(/(?<![\w-])(--[a-z][a-z0-9-]*)/g)].map((m) => m[1]!))

describe('docs/guide.md and chorus --help', () => {
  const guide = readFileSync(join(root, 'docs/guide.md'), 'utf8')
  const cliPart = /^## The `chorus` command\n([\s\S]*?)(?=^## )/m.exec(guide)?.[1] ?? ''
  const sections = new Map([...cliPart.matchAll(/^### `chorus ([a-z-]+)`\n([\s\S]*?)(?=^### |$(?![\s\S]))/gm)].map((m) => [m[1]!, m[2]!]))
  let commands: string[] = []
  const options = new Map<string, string[]>()

  beforeAll(async () => {
    commands = commandsOf(await help([]))
    const all = await Promise.all(commands.map((c) => allOptions([c])))
    commands.forEach((c, i) => options.set(c, all[i]!))
  }, 300_000)

  it('has a section for every command, and a command for every section', () => {
    expect(commands.length).toBeGreaterThan(5)
    expect([...sections.keys()].sort()).toEqual([...commands].sort())
  })

  it('names every option of every command in that command\'s section or a page it links to', () => {
    const missing: string[] = []
    for (const c of commands) {
      const section = sections.get(c) ?? ''
      const linked = [...section.matchAll(/\]\(([a-z-]+\.md)(?:#[^)]*)?\)/g)].map((m) => readFileSync(join(root, 'docs', m[1]!), 'utf8'))
      const documented = named([section, ...linked].join('\n'))
      for (const o of options.get(c)!) if (!documented.has(o)) missing.push(`chorus ${c} ${o}`)
    }
    expect(missing).toEqual([])
  })

  it('names no option that the command does not have', () => {
    const unknown: string[] = []
    for (const [c, section] of sections) {
      for (const o of named(section)) if (!options.get(c)?.includes(o) && !GLOBAL.includes(o)) unknown.push(`chorus ${c} ${o}`)
    }
    const everyOption = new Set([...options.values()].flat())
    const outside = cliPart.replace(/^### `chorus [\s\S]*?(?=^### (?!`chorus)|$(?![\s\S]))/gm, '')
    for (const o of named(outside)) if (!everyOption.has(o) && !GLOBAL.includes(o)) unknown.push(o)
    expect(unknown).toEqual([])
  })

  it('reads the help as commander prints it (the parser above is tested on a real help text)', async () => {
    const up = await help(['up'])
    expect(optionsOf(up)).toEqual(expect.arrayContaining(['--app', '--instances', '--no-balancer', '--watch', '--log-format', '--database-url-file']))
    expect(commandsOf(await help([]))).toContain('up')
  })
})
