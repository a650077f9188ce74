#!/usr/bin/env node
// The console's fleet view at fleet scale: how long one page takes with 100,000 known clients
// in a cluster. Seeds a real Redis through the same code paths a CONNECT takes (registry
// claim + the console's fleet record), some clients then disconnected normally, some lost with
// a will pending, starts a real Vigil node on it, and times the API calls the fleet view makes:
// the first page, a page by prefix, a page from a cursor deep in the range, a state-filtered
// page, and the sign-in call (/admin/cluster).
//
//   npm run build && node bench/console-fleet.mjs                    # 100,000 clients, goal ≤ 200 ms per page
//   node bench/console-fleet.mjs --clients 10000 --requests 20        # quick check
//
// A latency of single API calls (not a saturation test), but still load-sensitive: on a shared
// machine the tail grows with everyone else's CPU use. Loopback only; every loop is bounded.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { startRedis, randomPrefix } from '../dist/test/helpers/redis.js';
import { VigilRedis } from '../dist/src/redis/connection.js';
import { ClusterKeys } from '../dist/src/cluster/keys.js';
import { ClientRegistry } from '../dist/src/cluster/registry.js';
import { ClusterFleet } from '../dist/src/cluster/fleet-index.js';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const CLIENTS = opt('clients', 100_000);
const REQUESTS = opt('requests', 50);
const GOAL_MS = 200;
const TOKEN = 'bench-console-token-'.padEnd(48, 'x');
const CLI = fileURLToPath(new URL('../dist/src/cli.js', import.meta.url));

const idOf = (i) => `srv-${String(Math.floor(i / 1000)).padStart(3, '0')}-${String(i % 1000).padStart(3, '0')}`;

async function seed(url, prefix) {
  const redis = new VigilRedis({ target: { url }, commandTimeoutMs: 30000 });
  const keys = new ClusterKeys(prefix);
  const registry = new ClientRegistry({ redis, keys });
  const fleet = new ClusterFleet({ redis, keys, broker: { sessions: new Map() }, member: () => 'seed/1', describe: () => ({}) });
  const started = Date.now();
  const BATCH = 500;
  for (let from = 0; from < CLIENTS; from += BATCH) {
    await Promise.all(
      Array.from({ length: Math.min(BATCH, CLIENTS - from) }, async (_, k) => {
        const i = from + k;
        const clientId = idOf(i);
        const withWill = i % 10 === 0;
        const will = withWill
          ? { clientId, message: { topic: `status/${clientId}`, payload: Buffer.from('offline'), qos: 1, retain: false, origin: clientId }, delayS: 3600, identity: { username: clientId, clientId, roles: ['server'], authenticatedAtMs: Date.now() }, epoch: 0, protocolVersion: 5 }
          : undefined;
        const member = `seed-${i % 4}/1`;
        const { epoch } = await registry.claim(clientId, member, { cleanStart: true, will, sessionExpiryS: withWill ? 7200 : 0, owner: `user:${clientId}` });
        fleet.connected({ clientId, epoch, username: clientId, roles: ['server'], protocolVersion: 5, connectedAtMs: Date.now() });
        if (withWill) {
          await registry.abnormalDisconnect(clientId, epoch, 7200);
          fleet.gone(clientId, epoch, false, Date.now());
        } else if (i % 3 === 0) {
          await registry.normalDisconnect(clientId, epoch);
          fleet.gone(clientId, epoch, true, Date.now());
        }
      }),
    );
  }
  const indexed = await redis.client.zcard(keys.fleetIds);
  await redis.close();
  return { seconds: (Date.now() - started) / 1000, indexed };
}

function startNode(url, prefix) {
  const env = { ...process.env, VIGIL_MQTT_PORT: '0', VIGIL_METRICS_PORT: '0', VIGIL_BIND: '127.0.0.1', VIGIL_METRICS_BIND: '127.0.0.1', VIGIL_REDIS_URL: url, VIGIL_REDIS_PREFIX: prefix, VIGIL_NODE_ID: 'bench-node', VIGIL_ADMIN_TOKEN: TOKEN, VIGIL_LOG_LEVEL: 'info', VIGIL_SYS_INTERVAL_S: '0' };
  const proc = spawn(process.execPath, [CLI], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('vigil did not start')), 20000);
    proc.once('exit', (code) => reject(new Error(`vigil exited ${code}`)));
    createInterface({ input: proc.stdout }).on('line', (line) => {
      try {
        const e = JSON.parse(line);
        if (e.msg === 'vigil listening') {
          clearTimeout(timer);
          resolve({ proc, port: e.metricsPort });
        }
      } catch {
        // not JSON
      }
    });
  });
}

async function time(port, path) {
  const t0 = performance.now();
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers: { authorization: `Bearer ${TOKEN}` } });
  const body = await res.json();
  const ms = performance.now() - t0;
  if (!res.ok) throw new Error(`${path}: ${res.status} ${JSON.stringify(body)}`);
  return { ms, body };
}

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];

const redis = await startRedis();
const prefix = randomPrefix('bench-console');
let node;
try {
  process.stdout.write(`seeding ${CLIENTS} clients ... `);
  const s = await seed(redis.url, prefix);
  console.log(`${s.seconds.toFixed(1)} s, ${s.indexed} in the fleet index`);
  node = await startNode(redis.url, prefix);
  const mid = idOf(Math.floor(CLIENTS / 2));
  const calls = [
    ['sign-in: /admin/cluster', '/admin/cluster'],
    ['first page (50)', '/admin/fleet?limit=50'],
    ['prefix page (50)', `/admin/fleet?prefix=${encodeURIComponent(mid.slice(0, 8))}&limit=50`],
    ['cursor page mid-range (50)', `/admin/fleet?after=${encodeURIComponent(mid)}&limit=50`],
    ['state=down page (50)', '/admin/fleet?state=down&limit=50'],
    ['state=offline page (50)', '/admin/fleet?state=offline&limit=50'],
  ];
  for (const [, path] of calls) await time(node.port, path); // warm-up (connections, JIT)
  const rows = [];
  let worst = 0;
  for (const [name, path] of calls) {
    const ms = [];
    let shown = 0;
    for (let i = 0; i < REQUESTS; i++) {
      const r = await time(node.port, path);
      ms.push(r.ms);
      shown = r.body.clients?.length ?? r.body.members?.length ?? 0;
    }
    ms.sort((a, b) => a - b);
    const row = { name, n: REQUESTS, rows: shown, p50: pct(ms, 50), p95: pct(ms, 95), max: ms[ms.length - 1] };
    if (path.startsWith('/admin/fleet')) worst = Math.max(worst, row.p95);
    rows.push(row);
  }
  console.log(`\n${CLIENTS} known clients, ${REQUESTS} requests per call, one at a time, loopback`);
  console.log('call                          rows    p50 ms   p95 ms   max ms');
  for (const r of rows) console.log(`${r.name.padEnd(30)}${String(r.rows).padStart(4)}${r.p50.toFixed(1).padStart(10)}${r.p95.toFixed(1).padStart(9)}${r.max.toFixed(1).padStart(9)}`);
  console.log(`\nfleet page p95 (worst call): ${worst.toFixed(1)} ms — goal ≤ ${GOAL_MS} ms: ${worst <= GOAL_MS ? 'met' : 'NOT met'} (load-sensitive: run on a quiet machine)`);
} finally {
  node?.proc.kill('SIGTERM');
  await redis.stop();
}
