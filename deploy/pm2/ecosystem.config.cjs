// pm2: three instances of an app that uses Chorus on one host (`pm2 start deploy/pm2/ecosystem.config.cjs`).
// Each is its own app so that it has its own stable instance id and port. Put DATABASE_URL and
// CHORUS_SECRET in the environment pm2 runs in (or in `env` below, in a file kept out of git).
// kill_timeout is above closeTimeoutMs (25 s): close() always finishes before pm2's SIGKILL.
const instances = [1, 2, 3]

module.exports = {
  apps: instances.map((i) => ({
    name: `app-${i}`,
    script: 'server.mjs',
    cwd: '/srv/app',
    exec_mode: 'fork',
    autorestart: true,
    restart_delay: 1000,
    kill_timeout: 30000,
    env: {
      PORT: String(8080 + i),
      CHORUS_INSTANCE_ID: `app-${i}`,
      CHORUS_ADVERTISE_URL: `http://127.0.0.1:${8080 + i}`,
      CHORUS_PRESET: 'lan',
      CHORUS_CLOSE_TIMEOUT_MS: '25000',
    },
  })),
}
