// The quiz's shared settings, read from cluster.config (app 'quiz'): every instance reads them per
// request, so a change from the dashboard's Config panel or `chorus config set` applies on all of
// them within a second, without a restart. Defaults here; `npm start` pushes examples/quiz/config.
import { z } from 'zod'

export const settingsSchema = z
  .object({
    quiz: z
      .object({
        /** The duration a quiz gets when the instructor saves it without one, in seconds. */
        defaultDurationS: z.number().int().min(5).max(3600).default(60),
        /** Whether students may upload exercise submissions. */
        uploadsEnabled: z.boolean().default(true),
      })
      .loose()
      .prefault({}),
  })
  .loose()

/** The current settings, as this instance runs them. */
export function quizSettings(cluster) {
  return cluster.config.get('quiz')
}

export function registerSettings(app, { cluster }) {
  app.get('/api/settings', async () => ({ ...quizSettings(cluster), configVersion: cluster.config.version }))
}
