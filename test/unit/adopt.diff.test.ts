// Moving the example app onto Chorus (examples/adopt/before → after) stays a small change: the
// number of added plus removed lines, as git counts them.
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const dir = fileURLToPath(new URL('../../examples/adopt', import.meta.url))

function changedLines(): number {
  let out: string
  try {
    out = execFileSync('git', ['diff', '--no-index', '--numstat', 'before', 'after'], { cwd: dir, encoding: 'utf8' })
  } catch (err) {
    out = (err as { stdout: string }).stdout // exit code 1: the two differ
  }
  return out.trim().split('\n').reduce((n, line) => {
    const [added, removed] = line.split('\t')
    return n + Number(added) + Number(removed)
  }, 0)
}

describe('adopting Chorus in the example app', () => {
  it('changes 25 lines (12 removed, 13 added): five behaviours, the cluster, and one useCluster call', () => {
    expect(changedLines()).toBe(25)
  })
})
