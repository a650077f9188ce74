#!/usr/bin/env bash
# Installs the Debian packages the tests need when they are missing: redis-server (cluster
# tests start their own on a free port), redis-sentinel (the Sentinel failover test),
# mosquitto-clients (interop tests) and chromium (the console's browser tests drive it
# headless over the DevTools protocol). Nothing is
# started here; each test starts what it needs and stops it.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || need+=(redis-sentinel)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
[ -x /usr/bin/chromium ] || need+=(chromium)
if ((${#need[@]} == 0)); then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-system-deps: missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
  exit 1
fi
echo "ensure-system-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# the package's own service is not what the tests use
if command -v systemctl >/dev/null 2>&1; then systemctl stop redis-server redis-sentinel >/dev/null 2>&1 || true; fi
