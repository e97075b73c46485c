// Moving the example app onto Chorus (examples/adopt/before → after) stays a small change. A line
// changed counts once, as a side-by-side diff shows it: each hunk counts the larger of its removed
// and added lines (a line rewritten in place is one changed line, not two). The raw count of
// added plus removed lines, as `git diff --numstat` gives it, is asserted too, so growth shows.
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const dir = fileURLToPath(new URL('../../examples/adopt', import.meta.url))

function git(args: string[]): string {
  try {
    return execFileSync('git', ['diff', '--no-index', ...args, 'before', 'after'], { cwd: dir, encoding: 'utf8' })
  } catch (err) {
    return (err as { stdout: string }).stdout // exit code 1: the two differ
  }
}

function changedLines(): number {
  let n = 0
  for (const m of git(['-U0']).matchAll(/^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@/gm)) {
    n += Math.max(Number(m[1] ?? 1), Number(m[2] ?? 1))
  }
  return n
}

function addedPlusRemoved(): number {
  return git(['--numstat']).trim().split('\n').reduce((n, line) => {
    const [added, removed] = line.split('\t')
    return n + Number(added) + Number(removed)
  }, 0)
}

describe('adopting Chorus in the example app', () => {
  it('changes at most 15 lines: the cluster, one useCluster call, and the five behaviours', () => {
    const changed = changedLines()
    expect(changed).toBeLessThanOrEqual(15)
    expect(changed).toBe(13)
  })

  it('adds and removes 25 lines in all, as git counts them', () => {
    expect(addedPlusRemoved()).toBe(25)
  })
})
