// The chaos instances as real processes: started with the cluster's environment, killed with SIGKILL,
// started again under the same instance id, asked over IPC to quiesce, report and close. An exit that
// nobody asked for is reported as a crash.
import { fork } from 'node:child_process'
import { closeSync, openSync } from 'node:fs'
import { join } from 'node:path'

export class Instance {
  #child = null
  #exited = null
  #expected = false
  #next = 1
  #pending = new Map()

  /**
   * `onCrash({ id, pid, code, signal })` is called for every exit that was neither a kill nor a close.
   */
  constructor({ id, script, env, dir, onCrash }) {
    this.id = id
    this.script = script
    this.env = env
    this.logFile = join(dir, `${id}.log`)
    this.onCrash = onCrash
    this.pid = null
    this.ready = null
  }

  get running() {
    return this.#child !== null && this.#child.exitCode === null && this.#child.signalCode === null
  }

  /** Starts the process; `ready` resolves once it has joined the cluster and set up everything. */
  start() {
    if (this.running) return this.ready
    const log = openSync(this.logFile, 'a')
    const child = fork(this.script, [], {
      env: { ...process.env, ...this.env, CHORUS_INSTANCE_ID: this.id },
      stdio: ['ignore', log, log, 'ipc'],
    })
    closeSync(log)
    this.#child = child
    this.#expected = false
    this.pid = child.pid
    this.#exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
    this.ready = new Promise((resolve, reject) => {
      const onMessage = (msg) => {
        if (msg?.type !== 'ready') return
        child.off('message', onMessage)
        resolve(msg)
      }
      child.on('message', onMessage)
      child.once('exit', (code, signal) => reject(new Error(`${this.id} exited (${signal ?? code}) before it was ready`)))
    })
    this.ready.catch(() => undefined)
    child.on('message', (msg) => {
      const waiter = msg?.id !== undefined ? this.#pending.get(msg.id) : undefined
      if (!waiter) return
      this.#pending.delete(msg.id)
      if (msg.error) waiter.reject(new Error(`${this.id}: ${msg.error}`))
      else waiter.resolve(msg)
    })
    child.once('exit', (code, signal) => {
      for (const w of this.#pending.values()) w.reject(new Error(`${this.id} exited (${signal ?? code})`))
      this.#pending.clear()
      if (!this.#expected) this.onCrash({ id: this.id, pid: child.pid, code, signal })
    })
    return this.ready
  }

  /** kill -9; resolves once the process is gone. */
  async kill() {
    if (!this.running) return
    this.#expected = true
    this.#child.kill('SIGKILL')
    await this.#exited
  }

  /** Sends `{cmd}` and resolves with the answer, or rejects after `timeoutMs`. */
  call(cmd, timeoutMs) {
    if (!this.running) return Promise.reject(new Error(`${this.id} is not running`))
    const id = this.#next++
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id)
        reject(new Error(`${this.id} did not answer ${cmd} within ${timeoutMs} ms`))
      }, timeoutMs)
      this.#pending.set(id, {
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      })
      this.#child.send({ cmd, id })
    })
  }

  /** Asks the instance to close its cluster and exit; false when it did not within `timeoutMs` (it is then killed). */
  async close(timeoutMs) {
    if (!this.running) return true
    this.#expected = true
    const closed = await this.call('close', timeoutMs).then(
      () => true,
      () => false,
    )
    if (!closed) await this.kill()
    await this.#exited
    return closed
  }
}
