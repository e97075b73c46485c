/**
 * `chorus nginx`: renders an nginx config for the live members to stdout or `--out`; with
 * `--watch`, rewrites it whenever membership changes and runs `--reload` (e.g. `nginx -s reload`).
 */
import { exec } from 'node:child_process'
import { rename, writeFile } from 'node:fs/promises'
import { renderNginx, type NginxOptions } from '../balancer/nginx.js'
import { ReadinessProber } from '../balancer/readiness.js'
import { MemberWatcher } from '../balancer/watcher.js'
import { createLogger } from '../log.js'
import { locateDatabase } from './locate.js'

export interface NginxCommandOptions {
  databaseUrl?: string
  schema?: string
  out?: string
  watch?: boolean
  reload?: string
  listen: string
  sticky?: boolean
  snippet?: boolean
  runDir: string
  keepalive: number
  /** Readiness path probed on each member with --watch. Default `/health/ready`. */
  healthPath?: string
}

export async function nginxCommand(opts: NginxCommandOptions): Promise<void> {
  const found = await locateDatabase(opts.databaseUrl)
  const log = createLogger(process.env.CHORUS_LOG_LEVEL ?? 'warn', { instance: 'nginx' })
  const watcher = new MemberWatcher({ databaseUrl: found.url, schema: opts.schema ?? found.schema ?? 'chorus', log })
  await watcher.start()
  const render: Partial<NginxOptions> = { listen: opts.listen, sticky: !!opts.sticky, full: !opts.snippet, runDir: opts.runDir, keepalive: opts.keepalive }
  // With --watch, each member's readiness is probed every second: one that is up but not ready
  // (isolated from the database, starting) is rendered `down` until it is ready again.
  let onReadiness = () => undefined as void
  const prober = new ReadinessProber({ path: opts.healthPath, onChange: () => onReadiness() })
  let last = ''
  const write = async (): Promise<boolean> => {
    const text = renderNginx(watcher.members, render, (id) => prober.isReady(id))
    if (text === last) return false
    last = text
    if (!opts.out) process.stdout.write(text)
    else {
      const tmp = `${opts.out}.tmp-${process.pid}`
      await writeFile(tmp, text)
      await rename(tmp, opts.out)
    }
    return true
  }
  await write()
  if (!opts.watch) {
    await watcher.close()
    return
  }
  let running = Promise.resolve()
  const rewrite = () => {
    running = running.then(async () => {
      if (!(await write()) || !opts.reload) return
      await new Promise<void>((resolve) =>
        exec(opts.reload!, (err, _stdout, stderr) => {
          if (err) log.error({ err, stderr }, 'reload command failed')
          else log.info('nginx config rewritten and reloaded')
          resolve()
        }),
      )
    })
  }
  watcher.onChange((members) => {
    prober.track(members)
    rewrite()
  })
  onReadiness = rewrite
  prober.track(watcher.members)
  prober.start()
  await new Promise<void>((resolve) => {
    const stop = () => {
      prober.stop()
      void watcher.close().then(resolve)
    }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
}
