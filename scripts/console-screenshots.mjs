#!/usr/bin/env node
// Takes the console screenshots in docs/console/ with headless Chromium: a real three-node
// cluster on Redis in JWT mode (two signing keys, one of them rotated out), a small fleet of
// servers and sensors with wills, retained messages, a revocation, a policy change, traffic
// for the rate charts, and one node SIGKILLed (reaped, wills fired and denied).
//   npm run build && node scripts/console-screenshots.mjs [outDir]
// About a minute; loopback only.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { startRedis, randomPrefix } from '../dist/test/helpers/redis.js';
import { startNode, waitUntil } from '../dist/test/helpers/cluster.js';
import { launchBrowser } from '../dist/test/helpers/browser.js';
import { makeKey, jwksDocument, signToken } from '../dist/test/helpers/jwt.js';

const out = process.argv[2] ?? 'docs/console';
mkdirSync(out, { recursive: true });
const TOKEN = 'screenshot-admin-token-'.padEnd(48, '0');
const dir = mkdtempSync(join(tmpdir(), 'vigil-shots-'));
const acl = join(dir, 'acl.yaml');
const jwks = join(dir, 'jwks.json');
const policy = (deny) => `roles:
  server:
    publish: ["status/%c", "telemetry/%c/#"]
    subscribe: ["cmd/%c/#"]
${deny.length ? `    deny:\n      publish: [${deny.map((d) => JSON.stringify(d)).join(', ')}]\n` : ''}  sensor:
    publish: ["telemetry/%c/#", "site/#"]
  ops:
    subscribe: ["#"]
`;
writeFileSync(acl, policy([]));
const keyOld = await makeKey('2024-12');
const keyNew = await makeKey('2025-01', 'ES256');
writeFileSync(jwks, JSON.stringify(jwksDocument([keyOld, keyNew])));

const redis = await startRedis();
const prefix = randomPrefix('shots');
const env = { VIGIL_ADMIN_TOKEN: TOKEN, VIGIL_AUTH: 'jwt', VIGIL_JWKS: jwks, VIGIL_ACL: acl, VIGIL_JWKS_RETIRED_GRACE_S: '3600' };
const nodes = await Promise.all(['vigil-1', 'vigil-2', 'vigil-3'].map((nodeId) => startNode({ redisUrl: redis.url, prefix, nodeId, env })));
const [n1, n2, n3] = nodes;
await waitUntil(async () => (await Promise.all(nodes.map((n) => n.ready()))).every(Boolean), 15000, 'nodes ready');

const live = [];
async function connect(node, clientId, roles, extra = {}) {
  const password = await signToken(extra.key ?? keyNew, { sub: clientId, claims: { roles } });
  const c = await mqtt.connectAsync(node.url, { clientId, username: clientId, password, reconnectPeriod: 0, protocolVersion: 5, ...extra.options });
  live.push(c);
  return c;
}
const will = (id) => ({ topic: `status/${id}`, payload: Buffer.from('offline'), qos: 1, retain: true });

const ops = await connect(n1, 'ops-dashboard', ['ops']);
await ops.subscribeAsync('#', { qos: 0 });
for (let i = 1; i <= 6; i++) await connect(n2, `srv-rack1-0${i}`, ['server'], { options: { will: will(`srv-rack1-0${i}`) } });
for (let i = 1; i <= 5; i++) await connect(n1, `srv-rack2-0${i}`, ['server'], { key: i % 2 ? keyOld : keyNew, options: { will: { ...will(`srv-rack2-0${i}`), properties: { willDelayInterval: 900 } }, clean: false, properties: { sessionExpiryInterval: 3600 } } });
for (let i = 1; i <= 4; i++) await connect(n3, `srv-rack3-0${i}`, ['server'], { options: { will: will(`srv-rack3-0${i}`) } });
const sensors = [];
for (let i = 1; i <= 14; i++) sensors.push(await connect(i % 2 ? n1 : n3, `sensor-${String(i).padStart(3, '0')}`, ['sensor']));
// retained state, one binary payload
await sensors[0].publishAsync('site/a/temperature', '21.5 °C', { qos: 1, retain: true });
await sensors[1].publishAsync('site/a/humidity', '{"rh":41.2,"unit":"%"}', { qos: 1, retain: true });
await sensors[2].publishAsync('site/b/raw', Buffer.from([0x01, 0x7f, 0x00, 0xfe, 0x10, 0x22, 0x9a, 0xc3]), { qos: 1, retain: true });
await sensors[3].publishAsync('site/b/firmware', 'v4.2.1-rc3', { qos: 1, retain: true });

const admin = (path, init = {}) => fetch(`http://127.0.0.1:${n1.metricsPort}${path}`, { ...init, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', ...(init.headers ?? {}) } });
await admin('/admin/revoke', { method: 'POST', body: JSON.stringify({ subject: 'srv-rack1-06', ttlS: 86400 }) });
await admin('/admin/revoke', { method: 'POST', body: JSON.stringify({ jti: 'leaked-7f21c9', ttlS: 3600 }) });

// two servers go offline normally (persistent sessions), one more crashes later with its node
await live.find((c) => c.options.clientId === 'srv-rack2-04').endAsync();
// traffic for the charts: ~35 s at a modest rate
const until = Date.now() + 35000;
let n = 0;
while (Date.now() < until) {
  await Promise.all(sensors.map((s, i) => s.publishAsync(`telemetry/${s.options.clientId}/t`, String(20 + ((n + i) % 7)), { qos: 0 })));
  n++;
  await new Promise((r) => setTimeout(r, 60 + (Math.sin(n / 15) + 1) * 80));
}

// rack1-05 loses its permission; rotate the old key out (retired, within its grace)
writeFileSync(acl, policy(['status/srv-rack1-05']));
writeFileSync(jwks, JSON.stringify(jwksDocument([keyNew])));
await waitUntil(async () => (await (await admin('/admin/identity')).json()).acl.generation === 2, 15000, 'policy reload');
// srv-rack2-02 loses its connection: its will waits for its 900 s delay
live.find((c) => c.options.clientId === 'srv-rack2-02').stream.destroy();
await n2.kill('SIGKILL');
await waitUntil(async () => (await (await admin('/admin/cluster')).json()).reaps.length > 0, 20000, 'reap');
await new Promise((r) => setTimeout(r, 1500));

const browser = await launchBrowser();
try {
  const page = await browser.newPage(1360, 820);
  await page.goto(`http://127.0.0.1:${n1.metricsPort}/console/`);
  await page.screenshot(join(out, 'login.png'));
  await page.type('#token', TOKEN);
  await page.click('#login-form button[type=submit]');
  await page.waitFor(`document.querySelectorAll('#fleet-table tbody tr[data-client-id]').length > 10`, 10000, 'fleet');
  await page.type('#fleet-prefix', 'srv-');
  await page.click('#fleet-filter button[type=submit]');
  await page.waitFor(`document.querySelector('#fleet-table tr[data-client-id="srv-rack1-05"][data-will="denied"]')`, 10000, 'denied will');
  await page.screenshot(join(out, 'fleet.png'));
  await page.click('#fleet-table tr[data-client-id="srv-rack1-05"]');
  await page.waitFor(`document.querySelector('#drawer-body dl[data-decision]')`, 10000, 'explain');
  await page.screenshot(join(out, 'will-explain.png'));
  await page.click('#drawer-close');
  for (const [view, ready] of [
    ['wills', `document.querySelectorAll('#decisions-table tr[data-outcome]').length > 0`],
    ['retained', `document.querySelectorAll('#retained-table tr[data-topic]').length > 0`],
    ['identity', `document.querySelectorAll('#revocations-table tr[data-revocation]').length > 0`],
    ['cluster', `document.querySelectorAll('#charts svg').length > 0`],
  ]) {
    await page.eval(`location.hash = ${JSON.stringify(view)}`);
    await page.waitFor(ready, 10000, view);
    await new Promise((r) => setTimeout(r, 300));
    await page.screenshot(join(out, `${view}.png`));
  }
  console.log(`screenshots in ${out}/`);
} finally {
  await browser.close();
  for (const c of live) c.end(true);
  await Promise.all([n1.stop(), n3.stop()]);
  await redis.stop();
  rmSync(dir, { recursive: true, force: true });
}
