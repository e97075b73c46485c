import { defineConfig } from 'vitest/config'

// The system suite needs Debian packages (nginx, chromium): install them with scripts/install-system-deps.sh.
export default defineConfig({
  test: {
    include: ['test/system/**/*.test.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    pool: 'forks',
    maxWorkers: 1,
    testTimeout: 180_000,
    hookTimeout: 120_000,
  },
})
