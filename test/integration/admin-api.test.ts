// The admin API on a whole broker in jwt mode: "will explain" for a will that would be denied,
// revocation over HTTP disconnecting the subject and blocking its will.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, sleep } from '../helpers/mqtt.js';
import { jwksDocument, makeKey, signToken, tempDir } from '../helpers/jwt.js';

const ADMIN_TOKEN = 'a'.repeat(48);
const clients = new ClientPool();
let broker: TestBroker | undefined;
afterEach(async () => {
  await clients.closeAll();
  await broker?.close();
  broker = undefined;
});

async function admin(method: string, path: string, body?: object, token = ADMIN_TOKEN): Promise<{ status: number; json: any }> {
  const res = await fetch(`http://127.0.0.1:${broker!.metricsPort}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, json: await res.json().catch(() => null) };
}

test('will explain: a will whose permission was removed says it would be denied, and why', async () => {
  const dir = await tempDir();
  try {
    const key = await makeKey('K', 'RS256');
    const acl = await dir.write('acl.json', { roles: { server: { publish: ['trusted/%u/#'] } } });
    broker = await startBroker({ auth: 'jwt', jwks: await dir.write('jwks.json', jwksDocument([key])), acl, adminToken: ADMIN_TOKEN });
    const token = await signToken(key, { sub: 'srv1', claims: { roles: ['server'] } });
    await clients.connect(broker.url, { protocolVersion: 5, clientId: 'srv1', username: 'srv1', password: Buffer.from(token), will: { topic: 'trusted/srv1/state', payload: Buffer.from('down'), qos: 1, retain: true } });

    const before = await admin('GET', '/admin/wills/srv1/explain');
    assert.equal(before.status, 200);
    assert.equal(before.json.decisionIfFiredNow.allowed, true);
    assert.equal(before.json.authorization.username, 'srv1');
    assert.equal(before.json.will.topic, 'trusted/srv1/state');
    assert.ok(!JSON.stringify(before.json).includes(token), 'the token is never shown');

    const reloads = await broker.metric('vigil_acl_reloads_total');
    await dir.write('acl.json', { roles: { server: { publish: ['other/#'] } } });
    for (let i = 0; i < 100 && (await broker.metric('vigil_acl_reloads_total')) === reloads; i++) await sleep(50);
    const after = await admin('GET', '/admin/wills/srv1/explain');
    assert.equal(after.json.decisionIfFiredNow.allowed, false);
    assert.ok(after.json.decisionIfFiredNow.reason.length > 0);

    assert.equal((await admin('GET', '/admin/wills/srv1/explain', undefined, 'wrong')).status, 401);
  } finally {
    await dir.remove();
  }
});

test('revoke over HTTP: the live connection is closed with 0x87 and the will is denied as revoked', async () => {
  broker = await startBroker({ adminToken: ADMIN_TOKEN });
  const watcher = await clients.connect(broker.url, { protocolVersion: 5 });
  await watcher.mqtt.subscribeAsync('state/#', { qos: 1 });
  const dev = await clients.connect(broker.url, { protocolVersion: 5, clientId: 'dev1', username: 'dev1', will: { topic: 'state/dev1', payload: Buffer.from('down'), qos: 1, retain: false } });
  const disconnected = dev.waitForDisconnect(3000);
  const r = await admin('POST', '/admin/revoke', { subject: 'dev1' });
  assert.ok(r.status === 200 || r.status === 201, `status ${r.status}`);
  assert.equal((await disconnected).reasonCode, 0x87);
  await sleep(300);
  assert.equal(watcher.messages.length, 0);
  assert.equal(await broker.metric('vigil_wills_denied_total', { reason: 'revoked' }), 1);
  assert.equal(await broker.metric('vigil_revocations_total', { kind: 'subject' }), 1);
});

test('admin API is off without VIGIL_ADMIN_TOKEN', async () => {
  broker = await startBroker();
  assert.equal((await admin('GET', '/admin/clients')).status, 404);
});
