// Authorization settings: denied PUBLISH and SUBSCRIBE answers for both versions, the will
// authorization modes, the 3.1.1 will grace, and an ACL with VIGIL_AUTH=none.
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { IClientOptions } from 'mqtt';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, sleep, subackCodes } from '../helpers/mqtt.js';
import { jwksDocument, makeKey, signToken, tempDir, type TempDir, type TestKey } from '../helpers/jwt.js';

let dir: TempDir;
let key: TestKey;
let broker: TestBroker | undefined;
const clients = new ClientPool();
const POLICY = { roles: { device: { publish: ['dev/%u/#'], subscribe: ['dev/%u/#', 'status/#'] }, watcher: { subscribe: ['dev/#', 'status/#'] } } };

beforeEach(async () => {
  dir = await tempDir();
  key = await makeKey('K1', 'ES256');
});
afterEach(async () => {
  await clients.closeAll();
  await broker?.close();
  broker = undefined;
  await dir.remove();
});

async function jwtBroker(extra: Record<string, unknown> = {}): Promise<TestBroker> {
  broker = await startBroker({ auth: 'jwt', jwks: await dir.write('jwks.json', jwksDocument([key])), acl: await dir.write('acl.yaml', JSON.stringify(POLICY)), ...extra }, { captureLogs: true });
  return broker;
}

async function as(user: string, roles: string[], options: IClientOptions = {}) {
  return clients.connect(broker!.url, { username: '', password: Buffer.from(await signToken(key, { sub: user, claims: { roles } })), ...options });
}

function publishAck(c: Awaited<ReturnType<typeof as>>, topic: string, qos: 1 | 2): Promise<number> {
  return new Promise((resolve) => c.mqtt.publish(topic, 'x', { qos }, (err, packet) => resolve((err as { code?: number } | undefined)?.code ?? (packet as { reasonCode?: number } | undefined)?.reasonCode ?? 0)));
}

describe('denied PUBLISH', () => {
  test('MQTT 5: PUBACK and PUBREC carry 0x87; QoS 0 is dropped; nothing is delivered', async () => {
    await jwtBroker();
    const watcher = await as('w', ['watcher'], { protocolVersion: 5 });
    await watcher.mqtt.subscribeAsync('dev/#', { qos: 2 });
    const dev = await as('d1', ['device'], { protocolVersion: 5 });
    assert.equal(await publishAck(dev, 'dev/d2/x', 1), 0x87);
    assert.equal(await publishAck(dev, 'dev/d2/x', 2), 0x87);
    dev.mqtt.publish('dev/d2/x', 'q0', { qos: 0 });
    assert.equal(await publishAck(dev, 'dev/d1/x', 1), 0);
    const got = await watcher.waitForMessages(1, 2000);
    assert.equal(got[0].topic, 'dev/d1/x');
    await sleep(200);
    assert.equal(watcher.messages.length, 1);
    assert.equal(await broker!.metric('vigil_acl_denies_total', { action: 'publish' }), 3);
  });

  test('MQTT 3.1.1 with VIGIL_DENIED_PUBLISH_311=drop: acknowledged, not delivered', async () => {
    await jwtBroker({ deniedPublish311: 'drop' });
    const watcher = await as('w', ['watcher'], { protocolVersion: 4 });
    await watcher.mqtt.subscribeAsync('dev/#', { qos: 1 });
    const dev = await as('d1', ['device'], { protocolVersion: 4 });
    await dev.mqtt.publishAsync('dev/d2/x', 'no', { qos: 1 });
    await dev.mqtt.publishAsync('dev/d1/x', 'yes', { qos: 1 });
    const got = await watcher.waitForMessages(1, 2000);
    assert.equal(got[0].payload, 'yes');
    assert.equal(watcher.messages.length, 1);
  });

  test('MQTT 3.1.1 with VIGIL_DENIED_PUBLISH_311=disconnect: the connection is closed', async () => {
    await jwtBroker({ deniedPublish311: 'disconnect' });
    const dev = await as('d1', ['device'], { protocolVersion: 4 });
    const closed = dev.waitForClose(3000);
    dev.mqtt.publish('dev/d2/x', 'no', { qos: 1 });
    await closed;
  });
});

describe('denied SUBSCRIBE', () => {
  test('per filter: 0x87 in 5.0, 0x80 in 3.1.1; allowed filters in the same packet are granted', async () => {
    await jwtBroker();
    for (const version of [4, 5] as const) {
      const dev = await as(`d${version}`, ['device'], { protocolVersion: version });
      const codes = await subackCodes(dev.mqtt, { [`dev/d${version}/#`]: { qos: 1 }, 'dev/#': { qos: 1 }, 'status/a': { qos: 0 } });
      assert.deepEqual(codes, [1, version === 5 ? 0x87 : 0x80, 0]);
    }
  });
});

describe('will authorization modes', () => {
  test('VIGIL_WILL_AUTHZ=fire: CONNECT with a will on a forbidden topic is accepted, the will is denied when it fires', async () => {
    await jwtBroker({ willAuthz: 'fire' });
    const watcher = await as('w', ['watcher'], { protocolVersion: 5 });
    await watcher.mqtt.subscribeAsync('dev/#', { qos: 1 });
    const dev = await as('d1', ['device'], { protocolVersion: 5, will: { topic: 'dev/d2/state', payload: Buffer.from('down'), qos: 1, retain: false } });
    dev.mqtt.stream.destroy();
    await sleep(400);
    assert.equal(watcher.messages.length, 0);
    assert.equal(await broker!.metric('vigil_wills_denied_total'), 1);
  });

  test('VIGIL_WILL_AUTHZ=connect: a will allowed at CONNECT fires even after the policy removed the permission', async () => {
    await jwtBroker({ willAuthz: 'connect' });
    const watcher = await as('w', ['watcher'], { protocolVersion: 5 });
    await watcher.mqtt.subscribeAsync('dev/#', { qos: 1 });
    const dev = await as('d1', ['device'], { protocolVersion: 5, will: { topic: 'dev/d1/state', payload: Buffer.from('down'), qos: 1, retain: false } });
    await dir.write('acl.yaml', JSON.stringify({ roles: { watcher: POLICY.roles.watcher } }));
    const before = await broker!.metric('vigil_acl_reloads_total');
    for (let i = 0; i < 100 && (await broker!.metric('vigil_acl_reloads_total')) === before; i++) await sleep(50);
    dev.mqtt.stream.destroy();
    const got = await watcher.waitForMessages(1, 3000);
    assert.equal(got[0].payload, 'down');
  });
});

describe('MQTT 3.1.1 will grace (VIGIL_WILL_GRACE_MS)', () => {
  test('a reconnect within the grace cancels the will; without one it fires after the grace', async () => {
    broker = await startBroker({ willGraceMs: 1500 });
    const watcher = await clients.connect(broker.url, { protocolVersion: 4 });
    await watcher.mqtt.subscribeAsync('up/#', { qos: 1 });
    const will = { topic: 'up/a', payload: Buffer.from('down'), qos: 1 as const, retain: false };
    const a = await clients.connect(broker.url, { protocolVersion: 4, clientId: 'a', will });
    a.mqtt.stream.destroy();
    await sleep(500);
    await clients.connect(broker.url, { protocolVersion: 4, clientId: 'a', will });
    await sleep(1500);
    assert.equal(watcher.messages.length, 0, 'cancelled by the reconnect');
    assert.equal(await broker.metric('vigil_wills_cancelled_total', { cause: 'reconnect' }), 1);

    const b = await clients.connect(broker.url, { protocolVersion: 4, clientId: 'b', will: { ...will, topic: 'up/b' } });
    const t0 = Date.now();
    b.mqtt.stream.destroy();
    const got = await watcher.waitForMessages(1, 4000);
    assert.equal(got[0].topic, 'up/b');
    assert.ok(Date.now() - t0 >= 1400, 'held for the grace period');
  });
});

describe('an ACL with VIGIL_AUTH=none', () => {
  test('every client has the role anonymous; the policy fences topics', async () => {
    const acl = await dir.write('acl.json', { roles: { anonymous: { publish: ['open/#'], subscribe: ['open/#'] } } });
    broker = await startBroker({ acl });
    const c = await clients.connect(broker.url, { protocolVersion: 5 });
    assert.deepEqual(await subackCodes(c.mqtt, { 'open/#': { qos: 1 }, 'closed/#': { qos: 1 } }), [1, 0x87]);
    assert.equal(await publishAck(c, 'closed/x', 1), 0x87);
    assert.equal(await publishAck(c, 'open/x', 1), 0);
  });
});

describe('authentication failures back off', () => {
  // failed authentications: test/integration/auth-failures.test.ts
  test('VIGIL_CONNECT_RATE_PER_ADDRESS refuses sockets over the rate', async () => {
    broker = await startBroker({ connectRatePerAddress: 2 });
    const results = await Promise.allSettled(Array.from({ length: 10 }, () => clients.connect(broker!.url, { protocolVersion: 4 }, 2000)));
    const ok = results.filter((r) => r.status === 'fulfilled').length;
    assert.ok(ok >= 4 && ok <= 5, `burst of 4 (+ refill) allowed, got ${ok}`);
    assert.ok((await broker.metric('vigil_connections_refused_total', { reason: 'connect_rate' })) >= 5);
  });
});
