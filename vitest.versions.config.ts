import { defineConfig } from 'vitest/config'

// The focused set run on every supported PostgreSQL major other than the default
// (scripts/test-pg-versions.mjs sets CHORUS_TEST_PG_MAJOR): migrations, membership, bus, locks,
// jobs and the realtime log, plus the check that the server is the requested major.
export default defineConfig({
  test: {
    include: [
      'test/integration/db.version.test.ts',
      'test/integration/db.migrate.test.ts',
      'test/integration/membership.join.test.ts',
      'test/integration/membership.fencing.test.ts',
      'test/integration/bus.postgres.test.ts',
      'test/integration/locks.acquire.test.ts',
      'test/integration/locks.path.test.ts',
      'test/integration/jobs.enqueue.test.ts',
      'test/integration/jobs.worker.test.ts',
      'test/integration/realtime.gateway.test.ts',
    ],
    // Of the realtime gateway, only the tests of its log: resume from an id, gap notice.
    testNamePattern: /^(?!.*realtime gateway across instances (?!resumes on another instance|sends an explicit gap notice))/,
    globalSetup: ['test/helpers/global-setup.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
})
