import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import postgres from 'postgres'
import { chromium, type Browser, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { signAffinity } from '../../src/balancer/affinity.js'
import { startDashboard } from '../../src/dashboard/dashboard.js'
import { createLogger } from '../../src/log.js'
import { asUser, login, startQuiz, type QuizCluster } from '../helpers/quiz.js'

const root = new URL('../..', import.meta.url).pathname
const artifacts = join(root, 'artifacts/quiz')

describe('a live quiz end to end in real browsers', () => {
  let quiz: QuizCluster
  let browser: Browser
  let sql: postgres.Sql
  const errors: string[] = []

  beforeAll(async () => {
    await mkdir(artifacts, { recursive: true })
    quiz = await startQuiz({ sticky: true })
    sql = postgres(await quiz.databaseUrl(), { max: 2, onnotice: () => undefined })
    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    })
  })

  afterAll(async () => {
    await browser?.close()
    await sql?.end()
    await quiz?.stop()
  })

  /** A browser whose balancer cookie pins it to one instance, signed in through the login form. */
  async function open(user: string, instance: string): Promise<Page> {
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 } })
    await context.addCookies([{ name: 'chorus_affinity', value: signAffinity(quiz.secret, instance), url: quiz.base }])
    const page = await context.newPage()
    page.on('pageerror', (e) => errors.push(`${user}: ${e.message}`))
    await page.goto(quiz.base)
    await page.fill('input[name=name]', user)
    await page.fill('input[name=password]', user)
    await page.click('button[type=submit]')
    await page.waitForSelector('#course:not([hidden])')
    await expect.poll(() => page.textContent('#conn')).toBe(`connected · ${instance}`)
    expect(await page.getAttribute('#conn', 'data-instance')).toBe(instance)
    return page
  }

  it('reaches students on other instances at once, evaluates once, and delivers results even after a kill -9', async () => {
    const teacherApi = await login(quiz.base, 'teacher', 'teacher')
    const put = await fetch(`${quiz.base}/api/quizzes/2`, {
      method: 'PUT',
      headers: asUser(teacherApi),
      body: JSON.stringify({ title: 'Capitals (quick)', durationS: 12 }),
    })
    expect(put.status).toBe(200)

    const teacher = await open('teacher', 'instance-1')
    const alice = await open('alice', 'instance-2')
    const bob = await open('bob', 'instance-3')

    await teacher.locator('.quiz-row', { hasText: 'Capitals (quick)' }).getByRole('button', { name: 'Start' }).click()
    // No reload: the start arrives over STOMP on the students' own instances.
    for (const page of [alice, bob]) await page.waitForSelector('[data-testid=countdown]', { timeout: 10_000 })
    await alice.getByRole('button', { name: 'Lisbon' }).click()
    await alice.getByRole('button', { name: 'Ottawa' }).click()
    await bob.getByRole('button', { name: 'Porto' }).click()
    await bob.getByRole('button', { name: 'Ottawa' }).click()
    await expect.poll(() => alice.locator('.choice.picked').count()).toBe(2)
    await expect.poll(() => bob.locator('.choice.picked').count()).toBe(2)
    await teacher.screenshot({ path: join(artifacts, '1-teacher-running.png') })
    await alice.screenshot({ path: join(artifacts, '2-alice-answering.png') })

    // Bob's instance dies before the due date.
    const victim = (await quiz.status()).find((m) => m.id === 'instance-3')!
    process.kill(victim.pid, 'SIGKILL')
    await expect.poll(() => bob.textContent('#conn'), { timeout: 20_000 }).toMatch(/reconnecting|resumed/)
    await expect.poll(() => bob.textContent('#conn'), { timeout: 30_000 }).toMatch(/^resumed · instance-[12]$/)
    const bobNow = await bob.getAttribute('#conn', 'data-instance')
    expect(bobNow).toMatch(/^instance-[12]$/)

    await expect.poll(() => alice.textContent('[data-testid=result-2]').catch(() => null), { timeout: 40_000 }).toBe('2/2')
    await expect.poll(() => bob.textContent('[data-testid=result-2]').catch(() => null), { timeout: 40_000 }).toBe('1/2')
    await expect.poll(() => teacher.textContent('#results-panel'), { timeout: 20_000 }).toContain('2 students')
    await alice.screenshot({ path: join(artifacts, '3-alice-result.png') })
    await bob.screenshot({ path: join(artifacts, '4-bob-result-after-failover.png') })
    await teacher.screenshot({ path: join(artifacts, '5-teacher-statistics.png') })

    const evaluations = await sql`select run, students from quiz.evaluations where quiz_id = 2`
    expect(evaluations).toHaveLength(1)
    expect(evaluations[0]!.students).toBe(2)
    expect(errors).toEqual([])
  })

  it('switches uploads off from the dashboard\'s Config panel in Chromium, on every instance without a restart', async () => {
    const password = 'quiz-dashboard-password-0123'
    const dashboard = await startDashboard({ databaseUrl: await quiz.databaseUrl(), password, port: 0, log: createLogger('warn', { instance: 'dashboard' }) })
    try {
      const context = await browser.newContext({ viewport: { width: 1280, height: 1200 } })
      const page = await context.newPage()
      page.on('pageerror', (e) => errors.push(`dashboard: ${e.message}`))
      await page.goto(dashboard.url)
      await page.fill('#password', password)
      await page.click('button[type=submit]')
      await page.waitForSelector('#config-card')
      await expect.poll(() => page.textContent('#config-card .card-head')).toMatch(/version \d+/)
      await page.getByLabel('Key', { exact: true }).fill('quiz.uploadsEnabled')
      await page.getByLabel('Value (JSON, else text)', { exact: true }).fill('false')
      await page.getByRole('button', { name: 'Set', exact: true }).click()
      await expect.poll(() => page.textContent('[data-config-outcome]')).toMatch(/^set: version \d+$/)
      await page.screenshot({ path: join(artifacts, '6-dashboard-config-set.png') })

      // Every instance (instance-3 is back from its kill -9) runs the change: its settings say so and it refuses an upload.
      const student = await login(quiz.base, 'carol', 'carol')
      for (const port of [1, 2, 3].map((i) => quiz.port + i)) {
        const settings = async () => ((await fetch(`http://127.0.0.1:${port}/api/settings`).then((r) => r.json()).catch(() => null)) as { uploadsEnabled?: boolean } | null)?.uploadsEnabled
        await expect.poll(settings, { timeout: 40_000 }).toBe(false)
        const form = new FormData()
        form.append('file', new Blob([Buffer.from('late report\n')]), 'report.txt')
        const res = await fetch(`http://127.0.0.1:${port}/api/exercises/1/submission`, { method: 'POST', body: form, headers: asUser(student, false) })
        expect(res.status).toBe(403)
        expect(((await res.json()) as { error: string }).error).toBe('uploads-disabled')
      }
      await context.close()
      expect(errors).toEqual([])
    } finally {
      await dashboard.close()
    }
  })
})
