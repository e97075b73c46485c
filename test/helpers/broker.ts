// A message broker (redis-server, nats-server) run by a test: its own temp dir and free port, ready
// when its log says so, killed for real (SIGKILL) and restarted on the same port to test recovery.
import { spawn, type ChildProcess } from 'node:child_process'
import { accessSync, constants } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freeBase } from './ports.js'

/** The first of `paths` that is an executable file, or null (tests then skip, saying why). */
export function findBinary(...paths: string[]): string | null {
  for (const p of paths) {
    try {
      accessSync(p, constants.X_OK)
      return p
    } catch {
      // not there
    }
  }
  return null
}

const running = new Set<ChildProcess>()
process.once('exit', () => {
  for (const c of running) c.kill('SIGKILL')
})

export class BrokerProcess {
  #child: ChildProcess | null = null
  #output: string[] = []

  private constructor(
    readonly name: string,
    readonly bin: string,
    readonly args: (port: number, dir: string) => string[],
    readonly ready: RegExp,
    readonly port: number,
    readonly dir: string,
  ) {}

  static async start(
    name: string,
    bin: string,
    args: (port: number, dir: string) => string[],
    ready: RegExp,
    prepare: (dir: string) => Promise<void> = async () => undefined,
  ): Promise<BrokerProcess> {
    const port = await freeBase(0)
    const dir = await mkdtemp(join(tmpdir(), `chorus-${name}-`))
    await prepare(dir)
    const broker = new BrokerProcess(name, bin, args, ready, port, dir)
    await broker.restart()
    return broker
  }

  get pid(): number | undefined {
    return this.#child?.pid
  }

  /** Starts the server (again) on its port and resolves once its log says it is ready. */
  async restart(): Promise<void> {
    if (this.#child) throw new Error(`${this.name} is already running`)
    this.#output = []
    const child = spawn(this.bin, this.args(this.port, this.dir), { cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] })
    this.#child = child
    running.add(child)
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    void exited.then(() => {
      running.delete(child)
      if (this.#child === child) this.#child = null
    })
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name} did not start within 15 s:\n${this.#output.join('')}`)), 15_000)
      const onData = (chunk: Buffer) => {
        this.#output.push(chunk.toString())
        if (this.#output.length > 200) this.#output.shift()
        if (this.ready.test(this.#output.join(''))) {
          clearTimeout(timer)
          resolve()
        }
      }
      child.stdout!.on('data', onData)
      child.stderr!.on('data', onData)
      void exited.then(() => {
        clearTimeout(timer)
        reject(new Error(`${this.name} exited while starting:\n${this.#output.join('')}`))
      })
    })
  }

  /** kill -9: the server dies at once, its clients see their connections cut. */
  async kill(): Promise<void> {
    const child = this.#child
    if (!child) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGKILL')
    await exited
  }

  async stop(): Promise<void> {
    const child = this.#child
    if (child) {
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    }
    await rm(this.dir, { recursive: true, force: true })
  }
}
