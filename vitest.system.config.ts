import { defineConfig } from 'vitest/config'

// The system suite drives Debian packages (nginx): install them first with
// `scripts/install-system-deps.sh`.
export default defineConfig({
  test: {
    include: ['test/system/**/*.test.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    pool: 'forks',
    maxWorkers: 1,
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
})
