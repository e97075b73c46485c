#!/usr/bin/env bash
# Installs the Debian packages the system test suite needs (nginx, chromium), when they are missing.
# Run as root (or with sudo). Safe to run again.
set -euo pipefail
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
# The dashboard's browser test drives Debian's Chromium through playwright-core.
[ -x /usr/bin/chromium ] || need+=(chromium fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# The package may start a default server on port 80; the tests run their own nginx.
if command -v service >/dev/null 2>&1; then service nginx stop >/dev/null 2>&1 || true; fi
nginx -v
[ -x /usr/bin/chromium ] && /usr/bin/chromium --version
