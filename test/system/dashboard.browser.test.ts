import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { eventually } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'
import { Proc } from '../helpers/proc.js'

const root = new URL('../..', import.meta.url).pathname
const bin = join(root, 'bin/chorus.js')
const fixture = join(root, 'test/fixtures/dashboard-node.mjs')
const artifacts = join(root, 'artifacts/dashboard')
const password = 'browser-system-password'
const failAfterMs = 2500 // the local preset

/** Debian's Chromium, driven by playwright-core; a fresh profile each run. */
async function launch(dir: string, colorScheme: 'light' | 'dark', viewport: { width: number; height: number }): Promise<BrowserContext> {
  return chromium.launchPersistentContext(dir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    colorScheme,
    viewport,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
}

describe('the dashboard in a real browser', () => {
  let db: TestDatabase
  let dashboard: ChildProcess
  let url = ''
  let profile = ''
  let context: BrowserContext
  const procs = new Map<string, Proc>()
  const pageErrors: string[] = []

  beforeAll(async () => {
    await mkdir(artifacts, { recursive: true })
    db = await testDatabase()
    for (const id of ['a', 'b', 'c']) {
      procs.set(id, new Proc(fixture, [], { DATABASE_URL: db.url, CHORUS_SECRET: 'browser-system-secret-0123456789', CHORUS_PRESET: 'local', CHORUS_INSTANCE_ID: id }))
    }
    await Promise.all([...procs.values()].map((p) => p.waitFor((l) => l.type === 'ready', 30_000, 'ready')))
    dashboard = spawn(process.execPath, [bin, 'dashboard', '--port', '0', '--database-url', db.url], {
      env: { ...process.env, CHORUS_DASHBOARD_PASSWORD: password, CHORUS_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    dashboard.stdout!.on('data', (c: Buffer) => (out += c.toString()))
    dashboard.stderr!.on('data', (c: Buffer) => (out += c.toString()))
    await eventually(() => /dashboard on (http:\/\/\S+)/.test(out), `chorus dashboard; output:\n${out}`, 30_000, 50)
    url = /dashboard on (http:\/\/\S+)/.exec(out)![1]!
    profile = await mkdtemp(join(tmpdir(), 'chorus-chromium-'))
    context = await launch(profile, 'light', { width: 1440, height: 1000 })
  })

  afterAll(async () => {
    await context?.close()
    dashboard?.kill('SIGTERM')
    await Promise.all([...procs.values()].map((p) => p.stop()))
    await db?.drop()
    if (profile) await rm(profile, { recursive: true, force: true })
  })

  const rowStatus = (page: Page, id: string) => page.getAttribute(`#instances tr[data-instance="${id}"]`, 'data-status')

  it('signs in, sees three instances, watches one go down live after kill -9, and drains another from the page', async () => {
    const page = await context.newPage()
    page.on('pageerror', (e) => pageErrors.push(e.message))
    const first = await page.goto(`${url}/`)
    expect(first!.status()).toBe(401)
    await page.screenshot({ path: join(artifacts, '01-sign-in.png') })

    await page.fill('#password', 'not-the-password')
    await page.click('button[type=submit]')
    await page.waitForSelector('.login-error')
    expect(await page.textContent('.login-error')).toContain('wrong password')
    await page.fill('#password', password)
    await page.click('button[type=submit]')
    await page.waitForSelector('#instances tr[data-instance="c"]')
    await page.waitForFunction(() => document.querySelectorAll('#instances tr[data-status="up"]').length === 3, undefined, { timeout: 15_000 })
    expect(await page.$$eval('#instances tr[data-instance]', (rows) => rows.map((r) => (r as HTMLElement).dataset.instance))).toEqual(['a', 'b', 'c'])
    await page.waitForSelector('#live[data-state="live"]')

    // Some work, so the charts and panels have something to show.
    const a = procs.get('a')!
    a.send({ cmd: 'enqueue', count: 20, tag: 'w' })
    a.send({ cmd: 'enqueue', count: 1, fail: true, tag: 'f' })
    a.send({ cmd: 'publish', count: 40, tag: 'p' })
    a.send({ cmd: 'cache', tag: 'c' })
    await page.waitForSelector('#failures li[data-job]', { timeout: 15_000 })
    await page.waitForTimeout(2500)
    await page.screenshot({ path: join(artifacts, '02-three-instances.png'), fullPage: true })

    const reloads: string[] = []
    page.on('framenavigated', (f) => f === page.mainFrame() && reloads.push(f.url()))
    // The page notes when the row turns down (same machine, same clock), so the measure excludes
    // how often the test polls the page.
    await page.evaluate(() => {
      const w = window as unknown as { downAt: number }
      w.downAt = 0
      new MutationObserver(() => {
        if (!w.downAt && document.querySelector('#instances tr[data-instance="c"][data-status="down"]')) w.downAt = Date.now()
      }).observe(document.getElementById('instances')!, { subtree: true, childList: true, attributes: true })
    })
    const killedAt = Date.now()
    procs.get('c')!.kill('SIGKILL')
    await page.waitForSelector('#instances tr[data-instance="c"][data-status="down"]', { timeout: 15_000 })
    const tookMs = (await page.evaluate(() => (window as unknown as { downAt: number }).downAt)) - killedAt
    console.log(`kill -9 → the page shows c down after ${tookMs} ms, without a reload (failAfter ${failAfterMs} ms)`)
    expect(reloads).toEqual([])
    expect(tookMs).toBeLessThanOrEqual(failAfterMs + 2000)
    expect(await page.textContent('#events')).toContain('declared down')
    await page.screenshot({ path: join(artifacts, '03-instance-down.png'), fullPage: true })

    await page.click('#instances button[data-action="drain"][data-instance="b"]')
    await page.click('#instances button[data-action="drain"][data-instance="b"]')
    await page.waitForSelector('#instances tr[data-instance="b"][data-status="draining"]', { timeout: 10_000 })
    expect(await rowStatus(page, 'a')).toBe('up')
    await page.screenshot({ path: join(artifacts, '04-drained.png'), fullPage: true })
    expect(pageErrors).toEqual([])
  })

  it('reads well in dark mode and on a narrow screen', async () => {
    const cookies = await context.cookies()
    for (const [name, scheme, viewport] of [
      ['05-dark.png', 'dark', { width: 1440, height: 1000 }],
      ['06-narrow.png', 'light', { width: 390, height: 844 }],
    ] as const) {
      const dir = await mkdtemp(join(tmpdir(), 'chorus-chromium-'))
      const ctx = await launch(dir, scheme, viewport)
      try {
        await ctx.addCookies(cookies)
        const page = await ctx.newPage()
        page.on('pageerror', (e) => pageErrors.push(e.message))
        await page.goto(`${url}/`)
        await page.waitForSelector('#instances tr[data-instance="a"]')
        await page.waitForTimeout(1500)
        await page.screenshot({ path: join(artifacts, name), fullPage: true })
      } finally {
        await ctx.close()
        await rm(dir, { recursive: true, force: true })
      }
    }
    expect(pageErrors).toEqual([])
  })
})
