#!/usr/bin/env bash
# Opt-in check that a real Prometheus can scrape a Vigil node: starts one node and Prometheus
# (Debian package `prometheus`, installed with apt-get when missing and running as root) on
# loopback, makes one MQTT connection, and waits until
#   /api/v1/query?query=vigil_connections_opened_total
# returns data. Also validates deploy/prometheus.yml with promtool. Cleans up on exit.
#   scripts/prometheus-check.sh          (needs `npx tsc -p .` to have built dist/)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOST=127.0.0.1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vigil-prom-check.XXXXXX")
PIDS=()

log() { printf 'prometheus-check: %s\n' "$*" >&2; }

cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    log "prometheus is missing: apt-get install prometheus (as root)"
    exit 1
  fi
  log "installing the Debian package prometheus"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # the package's own service is not the one this check uses
  if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus >/dev/null 2>&1 || true; fi
fi
[ -f "$ROOT/dist/src/cli.js" ] || { log "no dist/src/cli.js: run npx tsc -p . first"; exit 1; }

if command -v promtool >/dev/null 2>&1; then
  promtool check config "$ROOT/deploy/prometheus.yml" >/dev/null
  log "deploy/prometheus.yml: promtool check config ok"
fi

free_port() { node -e "const s=require('net').createServer().listen(0,'$HOST',()=>{console.log(s.address().port);s.close()})"; }
MQTT_PORT=$(free_port)
METRICS_PORT=$(free_port)
PROM_PORT=$(free_port)

(
  cd "$ROOT"
  export VIGIL_NODE_ID=prom-check VIGIL_BIND=$HOST VIGIL_METRICS_BIND=$HOST VIGIL_MQTT_PORT=$MQTT_PORT VIGIL_METRICS_PORT=$METRICS_PORT VIGIL_LOG_LEVEL=warn
  exec node dist/src/cli.js
) >"$WORK/vigil.log" 2>&1 &
PIDS+=($!)

cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: vigil
    static_configs:
      - targets: ['$HOST:$METRICS_PORT']
EOF
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/data" --web.listen-address="$HOST:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)

deadline=$((SECONDS + 20))
until curl -fsS -o /dev/null --max-time 1 "http://$HOST:$METRICS_PORT/readyz" 2>/dev/null; do
  ((SECONDS < deadline)) || { log "vigil did not become ready"; cat "$WORK/vigil.log" >&2; exit 1; }
  sleep 0.2
done

# one connection, so the labelled counter has a series
(cd "$ROOT" && node --input-type=module -e "
import mqtt from 'mqtt';
const c = await mqtt.connectAsync('mqtt://$HOST:$MQTT_PORT', { reconnectPeriod: 0, connectTimeout: 5000 });
await c.publishAsync('prometheus/check', 'hello');
await c.endAsync();
")

deadline=$((SECONDS + 30))
query="http://$HOST:$PROM_PORT/api/v1/query?query=vigil_connections_opened_total"
while :; do
  body=$(curl -fsS --max-time 2 "$query" 2>/dev/null || true)
  if [[ "$body" == *'"status":"success"'* && "$body" == *'"__name__":"vigil_connections_opened_total"'* ]]; then
    log "Prometheus scraped Vigil: $body"
    break
  fi
  if ((SECONDS >= deadline)); then
    log "no data for vigil_connections_opened_total after 30 s; last answer: ${body:-none}"
    tail -20 "$WORK/prometheus.log" >&2
    exit 1
  fi
  sleep 0.5
done

targets=$(curl -fsS --max-time 2 "http://$HOST:$PROM_PORT/api/v1/targets?state=active")
[[ "$targets" == *'"health":"up"'* ]] || { log "target not up: $targets"; exit 1; }
echo "prometheus-check: ok (vigil_connections_opened_total has data, target up)"
