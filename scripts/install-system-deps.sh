#!/usr/bin/env bash
# Installs the Debian packages the test suites need (nginx, chromium, PgBouncer, PostgreSQL 15's
# server tools for the replica tests, Redis and NATS for the bus transports, iproute2 for the partition
# test), when they are missing.
# Run as root (or with sudo) on Debian 12. Safe to run again.
set -euo pipefail
PG_BIN=/usr/lib/postgresql/15/bin
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
# The dashboard's browser test drives Debian's Chromium through playwright-core.
[ -x /usr/bin/chromium ] || need+=(chromium fonts-dejavu-core)
# The pooler tests run Debian's PgBouncer in transaction mode.
[ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
# The failover test builds a primary and a streaming standby with initdb, pg_basebackup and pg_ctl.
[ -x "$PG_BIN/pg_ctl" ] && [ -x "$PG_BIN/pg_basebackup" ] || need+=(postgresql-15 postgresql-client-15)
# The bus contract tests run Redis and NATS servers of their own, on free ports.
[ -x /usr/bin/redis-server ] || need+=(redis-server)
[ -x /usr/sbin/nats-server ] || need+=(nats-server)
# The partition test puts instances in network namespaces (ip netns, veth) and cuts them off (tc).
command -v ip >/dev/null 2>&1 && command -v tc >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # The tests make their own clusters; the package's default one on port 5432 would only be in the way.
  mkdir -p /etc/postgresql-common/createcluster.d
  echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/chorus-tests.conf
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The packages may start default servers (nginx on 80, PgBouncer on 6432, Redis on 6379); the tests
# run their own.
if command -v service >/dev/null 2>&1; then
  service nginx stop >/dev/null 2>&1 || true
  service pgbouncer stop >/dev/null 2>&1 || true
  service redis-server stop >/dev/null 2>&1 || true
fi
nginx -v
[ -x /usr/bin/chromium ] && /usr/bin/chromium --version
/usr/sbin/pgbouncer --version | head -n 1
"$PG_BIN/postgres" --version
/usr/bin/redis-server --version
/usr/sbin/nats-server --version
ip -V
