// A whole broker with every listener on: MQTT over TLS (client certificate required, its CN
// usable in the ACL as %s) and over WebSocket, /metrics counters moving with real traffic,
// and no secret in the logs.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, sleep } from '../helpers/mqtt.js';

const ADMIN_TOKEN = 'admin-secret-' + 'x'.repeat(32);
const JWT_SECRET = 'jwt-secret-' + 'y'.repeat(40);
const clients = new ClientPool();
let broker: TestBroker;
let pki: { dir: string; ca: string; cert: string; key: string; clientCert: string; clientKey: string };
let tlsPort = 0;
let wsPort = 0;

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function makePki() {
  const dir = mkdtempSync(join(tmpdir(), 'vigil-op-pki-'));
  const p = (f: string) => join(dir, f);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], timeout: 15_000 });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ssl('req', '-x509', ...ec, '-keyout', p('ca.key'), '-out', p('ca.crt'), '-days', '1', '-subj', '/CN=op-ca');
  for (const [name, cn, ext] of [['server', 'localhost', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n'], ['client', 'sensor-9', 'extendedKeyUsage=clientAuth\n']]) {
    writeFileSync(p(`${name}.ext`), ext);
    ssl('req', ...ec, '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`), '-subj', `/CN=${cn}`);
    ssl('x509', '-req', '-in', p(`${name}.csr`), '-CA', p('ca.crt'), '-CAkey', p('ca.key'), '-CAcreateserial', '-out', p(`${name}.crt`), '-days', '1', '-extfile', p(`${name}.ext`));
  }
  return { dir, ca: p('ca.crt'), cert: p('server.crt'), key: p('server.key'), clientCert: p('client.crt'), clientKey: p('client.key') };
}

before(async () => {
  pki = makePki();
  [tlsPort, wsPort] = await Promise.all([freePort(), freePort()]);
  const acl = join(pki.dir, 'acl.yaml');
  writeFileSync(acl, ['roles:', '  anonymous:', '    publish: ["devices/%s/#", "open/#"]', '    subscribe: ["devices/#", "open/#", "state/#"]', ''].join('\n'));
  broker = await startBroker(
    { tlsPort, tlsCert: pki.cert, tlsKey: pki.key, tlsCa: pki.ca, tlsRequireClientCert: true, wsPort, acl, adminToken: ADMIN_TOKEN, jwtSecret: JWT_SECRET, logLevel: 'debug' },
    { captureLogs: true },
  );
});
after(async () => {
  await clients.closeAll();
  await broker?.close();
});

test('TLS with a client certificate: its CN is %s in the ACL', async () => {
  const tls = { ca: readFileSync(pki.ca), cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey), rejectUnauthorized: true };
  const sensor = await clients.connect(`mqtts://127.0.0.1:${tlsPort}`, { protocolVersion: 5, clientId: 'tls-sensor', ...tls });
  const watcher = await clients.connect(`ws://127.0.0.1:${wsPort}/mqtt`, { protocolVersion: 4, clientId: 'ws-watcher' });
  await watcher.mqtt.subscribeAsync('devices/#', { qos: 1 });
  await sensor.mqtt.publishAsync('devices/sensor-9/temp', '21.5', { qos: 1 });
  const [m] = await watcher.waitForMessages(1, 3000);
  assert.equal(m.topic, 'devices/sensor-9/temp');
  // another device's topic, or a TCP client without a certificate, is not allowed %s topics
  const denied = await new Promise<number>((resolve) => sensor.mqtt.publish('devices/other/temp', 'x', { qos: 1 }, (err, p) => resolve((err as { code?: number } | undefined)?.code ?? (p as { reasonCode?: number } | undefined)?.reasonCode ?? 0)));
  assert.equal(denied, 0x87);
  const plain = await clients.connect(broker.url, { protocolVersion: 5, clientId: 'plain' });
  const plainDenied = await new Promise<number>((resolve) => plain.mqtt.publish('devices/sensor-9/temp', 'x', { qos: 1 }, (err, p) => resolve((err as { code?: number } | undefined)?.code ?? (p as { reasonCode?: number } | undefined)?.reasonCode ?? 0)));
  assert.equal(plainDenied, 0x87);
});

test('/metrics counters move with real traffic: connects, publishes, denies, wills fired and denied', async () => {
  const scrape = async () => (await fetch(`http://127.0.0.1:${broker.metricsPort}/metrics`)).text();
  const value = (text: string, series: string) => {
    let sum = 0;
    for (const line of text.split('\n')) if (line.startsWith(series)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    return sum;
  };
  const before = await scrape();
  const watcher = await clients.connect(broker.url, { protocolVersion: 5, clientId: 'm-watch' });
  await watcher.mqtt.subscribeAsync('state/#', { qos: 1 });
  const a = await clients.connect(broker.url, { protocolVersion: 5, clientId: 'm-a', will: { topic: 'open/a/state', payload: Buffer.from('down'), qos: 1, retain: false } });
  const b = await clients.connect(broker.url, { protocolVersion: 4, clientId: 'm-b' });
  for (let i = 0; i < 5; i++) await a.mqtt.publishAsync('open/x', 'y', { qos: 1 });
  await new Promise((resolve) => b.mqtt.publish('closed/x', 'y', { qos: 1 }, resolve)); // denied
  a.mqtt.stream.destroy(); // will fires
  await sleep(300);
  // a will the policy refuses at fire time: allowed at CONNECT only in 'fire' mode, so use the revocation path
  const c = await clients.connect(broker.url, { protocolVersion: 5, clientId: 'm-c', username: 'doomed', will: { topic: 'open/c', payload: Buffer.from('down'), qos: 0, retain: false } });
  await broker.server.identity.revocations.revokeSubject('doomed');
  await c.waitForClose(3000);
  await sleep(300);
  const after = await scrape();
  const delta = (series: string) => value(after, series) - value(before, series);
  assert.ok(delta('vigil_connect_outcomes_total{code="success"') >= 3, 'connects counted');
  assert.ok(delta('vigil_messages_in_total{qos="1"') >= 6, 'publishes counted');
  assert.ok(delta('vigil_acl_denies_total{action="publish"') >= 1, 'deny counted');
  assert.ok(delta('vigil_wills_fired_total') >= 1, 'will fired counted');
  assert.ok(delta('vigil_wills_denied_total{reason="revoked"') >= 1, 'will denied counted');
  assert.ok(value(after, 'vigil_connections_current') >= 2);
  assert.match(after, /vigil_process_resident_memory_bytes/);
});

test('no secret or token reaches the logs', async () => {
  // an admin call with the token, a failed admin call, a CONNECT with a password
  await fetch(`http://127.0.0.1:${broker.metricsPort}/admin/clients`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  await fetch(`http://127.0.0.1:${broker.metricsPort}/admin/clients`, { headers: { authorization: 'Bearer wrong-token-zzz' } });
  const pw = 'hunter2-password-' + 'z'.repeat(20);
  const c = await clients.connect(broker.url, { protocolVersion: 4, clientId: 'pw-client', username: 'someone', password: Buffer.from(pw) });
  await c.mqtt.endAsync();
  await sleep(200);
  const text = JSON.stringify(broker.logs);
  assert.ok(broker.logs.length > 10, 'debug logs were captured');
  for (const secret of [ADMIN_TOKEN, JWT_SECRET, pw, 'wrong-token-zzz']) assert.ok(!text.includes(secret), `a secret reached the logs: ${secret.slice(0, 8)}…`);
});
