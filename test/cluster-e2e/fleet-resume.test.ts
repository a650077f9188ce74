// A fleet resumes its persistent sessions on another node at once (two Vigil processes in jwt
// mode on one real Redis): the claim of each CONNECT also fences, loads and keeps its stored
// session (claim-client.lua), several clients per call. Each device gets its own session back
// (the message queued for it while it was away, nobody else's), its new will is its own and
// fires once when the node it resumed on is SIGKILLed, and another identity's CONNECT with a
// device's client id in the same burst is refused without touching that device's session.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startJwtPair, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { ClientPool, sleep } from '../helpers/mqtt.js';
import { makeKey, signToken, tempDir, type TempDir, type TestKey } from '../helpers/jwt.js';
import type { IClientOptions } from 'mqtt';

const POLICY = { roles: { device: { publish: ['status/%u', 'trusted/%u/#'], subscribe: ['trusted/%u/#'] }, monitor: { subscribe: ['status/#'] }, server: { publish: ['trusted/#'] } } };
const N = 20;
const CONNECT_MS = 20000; // a loaded CI machine verifies tokens slowly

let redis: TestRedis;
let dir: TempDir;
let key: TestKey;
let a: VigilNode;
let b: VigilNode;
const clients = new ClientPool();

before(async () => {
  redis = await startRedis();
  dir = await tempDir();
  key = await makeKey('K1', 'RS256');
  [a, b] = await startJwtPair({ redisUrl: redis.url, dir, keys: [key], policy: POLICY, name: 'fleet' });
});
after(async () => {
  await clients.closeAll();
  await Promise.all([a?.stop(), b?.kill('SIGKILL')]);
  await redis?.stop();
  await dir?.remove();
});

async function as(sub: string, roles: string[], extra: IClientOptions = {}): Promise<IClientOptions> {
  return { protocolVersion: 5, username: sub, password: Buffer.from(await signToken(key, { sub, claims: { roles } })), ...extra };
}

/** Device i's persistent session, with a will on its own status topic. */
const device = (i: number, will: string) =>
  as(`d${i}`, ['device'], {
    clientId: `dev-${i}`,
    clean: false,
    properties: { sessionExpiryInterval: 600 },
    will: { topic: `status/d${i}`, payload: Buffer.from(will), qos: 1, retain: false },
  });

test('a fleet resumes on another node at once: each device its own session and will, another identity refused in the same burst', { timeout: 90000 }, async () => {
  // the sessions: stored by node A, each subscribed to its own topic, then left (normal DISCONNECT)
  for (let i = 0; i < N; i++) {
    const d = await clients.connect(a.url, await device(i, `d${i} down (a)`), CONNECT_MS);
    await d.mqtt.subscribeAsync(`trusted/d${i}/#`, { qos: 1 });
    await d.mqtt.endAsync();
  }
  // while they are away, one message each, acknowledged: it is in its session in Redis
  const server = await clients.connect(a.url, await as('srv', ['server'], { clientId: 'fleet-server' }), CONNECT_MS);
  for (let i = 0; i < N; i++) await server.mqtt.publishAsync(`trusted/d${i}/cmd`, `for-d${i}`, { qos: 1 });
  const monitor = await clients.connect(a.url, await as('mon', ['monitor'], { clientId: 'fleet-monitor' }), CONNECT_MS);
  await monitor.mqtt.subscribeAsync('status/#', { qos: 1 });

  // every device at once to node B, and Mallory with device 3's client id in the same burst
  const options = await Promise.all(Array.from({ length: N }, (_, i) => device(i, `d${i} down (b)`)));
  const mallory = await as('mallory', ['device'], { clientId: 'dev-3', clean: false, properties: { sessionExpiryInterval: 600 } });
  const [refused, ...back] = await Promise.all([clients.connectRefused(b.url, mallory, CONNECT_MS), ...options.map((o) => clients.connect(b.url, o, CONNECT_MS))]);
  assert.equal(refused.code, 0x85, 'another identity is refused');
  for (const [i, d] of back.entries()) {
    assert.equal(d.connack.sessionPresent, true, `dev-${i}: its session is back`);
    const [m] = await d.waitForMessages(1, 15000);
    assert.deepEqual([m.topic, m.payload], [`trusted/d${i}/cmd`, `for-d${i}`], `dev-${i}: its own queued message`);
  }
  // the subscriptions came back too: a new message reaches each device through node B's routes
  for (let i = 0; i < N; i++) await server.mqtt.publishAsync(`trusted/d${i}/cmd`, `again-d${i}`, { qos: 1 });
  for (const [i, d] of back.entries()) {
    await d.waitForMessages(2, 15000);
    assert.deepEqual(d.messages.map((m) => m.payload), [`for-d${i}`, `again-d${i}`], `dev-${i}: its own messages only`);
  }
  assert.equal(monitor.messages.length, 0, 'no will went at the resume (delay 0 wills were dropped by the normal DISCONNECTs)');

  // node B dies: node A reaps it and fires each device's new will, once, as its own
  await b.kill('SIGKILL');
  await waitUntil(() => monitor.messages.length >= N, 30000, 'the fleet\'s wills');
  await sleep(500); // room for a second copy to show up
  const wills = monitor.messages.map((m) => `${m.topic}=${m.payload}`).sort();
  assert.deepEqual(wills, Array.from({ length: N }, (_, i) => `status/d${i}=d${i} down (b)`).sort(), 'each device\'s own new will, exactly once');
});
