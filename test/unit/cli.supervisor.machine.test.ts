import { describe, expect, it } from 'vitest'
import { isChorusError } from '../../src/errors.js'
import { startEntry } from '../../src/cli/preflight.js'
import { supervisedMachine } from '../../src/cli/supervisor.js'

describe('the state machine of a process chorus up supervises', () => {
  it('goes through a crash, a restart and a stop', () => {
    const m = supervisedMachine('instance-1')
    for (const next of ['starting', 'running', 'backoff', 'starting', 'running', 'stopping', 'stopped', 'starting'] as const) m.to(next)
    expect(m.state).toBe('starting')
  })

  it('refuses to call a process ready that is not starting, with a typed error, and stays where it was', () => {
    const m = supervisedMachine('instance-1')
    m.to('starting')
    m.to('failed')
    let caught: unknown
    try {
      m.to('running')
    } catch (err) {
      caught = err
    }
    expect(isChorusError(caught, 'CHORUS_ERR_INTERNAL_TRANSITION')).toBe(true)
    expect((caught as Error).message).toBe('instance-1 cannot go from "failed" to "running"')
    expect(m.state).toBe('failed')
  })
})

describe('the node entry of a start script', () => {
  it('is the first word after node and its options', () => {
    expect(startEntry('node server.js')).toBe('server.js')
    expect(startEntry('NODE_ENV=production node --enable-source-maps -r dotenv/config dist/main.js --port 3000')).toBe('dist/main.js')
    expect(startEntry('/usr/bin/node --import ./register.mjs "src/app.mjs"')).toBe('src/app.mjs')
  })

  it('is none when the script does not run node', () => {
    expect(startEntry('tsx watch src/app.ts')).toBeUndefined()
    expect(startEntry('node')).toBeUndefined()
    expect(startEntry('next start')).toBeUndefined()
  })
})
