// Sessions belong to an identity across the cluster: the owner check runs inside the claim
// script in Redis, so it holds on whichever node a CONNECT lands. Two Vigil processes in jwt
// mode (real RS256 tokens) on one real Redis: Mallory's CONNECT with Alice's client id on the
// other node is refused and changes nothing; Alice's will fires once when her node is SIGKILLed.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startJwtPair, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { ClientPool, sleep, type Version } from '../helpers/mqtt.js';
import { makeKey, signToken, tempDir, type TempDir, type TestKey } from '../helpers/jwt.js';
import type { IClientOptions } from 'mqtt';

const POLICY = { roles: { device: { publish: ['status/%u', 'trusted/%u/#'], subscribe: ['trusted/%u/#'] }, monitor: { subscribe: ['status/#'] } } };

let redis: TestRedis;
let dir: TempDir;
let key: TestKey;
let a: VigilNode;
let b: VigilNode;
const clients = new ClientPool();
const CONNECT_MS = 15000; // a loaded CI machine verifies tokens slowly

before(async () => {
  redis = await startRedis();
  dir = await tempDir();
  key = await makeKey('K1', 'RS256');
  [a, b] = await startJwtPair({ redisUrl: redis.url, dir, keys: [key], policy: POLICY, name: 'own' });
});
after(async () => {
  await clients.closeAll();
  await Promise.all([a?.kill('SIGKILL'), b?.stop()]);
  await redis?.stop();
  await dir?.remove();
});

async function as(sub: string, roles: string[], v: Version, extra: IClientOptions = {}): Promise<IClientOptions> {
  return { protocolVersion: v, username: sub, password: Buffer.from(await signToken(key, { sub, claims: { roles } })), ...extra };
}

test('Mallory on the other node cannot take Alice\'s client id; Alice\'s will fires once when her node is SIGKILLed', { timeout: 60000 }, async () => {
  const monitor = await clients.connect(b.url, await as('mon', ['monitor'], 5, { clientId: 'own-monitor' }), CONNECT_MS);
  await monitor.mqtt.subscribeAsync('status/#', { qos: 1 });
  const aliceOptions = await as('alice', ['device'], 5, {
    clientId: 'alice-1',
    clean: false,
    properties: { sessionExpiryInterval: 600 },
    will: { topic: 'status/alice', payload: Buffer.from('alice down'), qos: 1, retain: false },
  });
  const alice = await clients.connect(a.url, aliceOptions, CONNECT_MS);
  await alice.mqtt.subscribeAsync('trusted/alice/#', { qos: 1 });
  let aliceLost = false;
  alice.mqtt.on('disconnect', () => (aliceLost = true));

  // Mallory, valid token of her own, on node B, both protocol versions, resume and clean start
  for (const [v, clean, code] of [[5, false, 0x85], [5, true, 0x85], [4, false, 0x02], [4, true, 0x02]] as const) {
    const err = await clients.connectRefused(b.url, await as('mallory', ['device'], v, { clientId: 'alice-1', clean, ...(v === 5 ? { properties: { sessionExpiryInterval: 600 } } : {}) }), CONNECT_MS);
    assert.equal(err.code, code, `MQTT ${v} clean=${clean}`);
  }
  assert.equal(await b.metric('vigil_takeovers_refused_total', { scope: 'cluster' }), 4);

  // nothing of Alice's moved: connected on A, her subscription delivers, no will went
  await alice.mqtt.publishAsync('trusted/alice/ping', 'still here', { qos: 1 });
  const [ping] = await alice.waitForMessages(1, 10000);
  assert.equal(ping.payload, 'still here');
  assert.equal(aliceLost, false);
  assert.equal(alice.mqtt.connected, true);
  assert.equal(monitor.messages.length, 0);

  // Alice's node dies; B reaps it and publishes her will, once
  await a.kill('SIGKILL');
  await waitUntil(() => monitor.messages.length > 0, 20000, "Alice's will");
  assert.equal(monitor.messages[0].payload, 'alice down');
  // her stored session is still hers: Mallory is refused on the survivor, Alice resumes it
  const err = await clients.connectRefused(b.url, await as('mallory', ['device'], 5, { clientId: 'alice-1', clean: false, properties: { sessionExpiryInterval: 600 } }), CONNECT_MS);
  assert.equal(err.code, 0x85);
  const back = await clients.connect(b.url, { ...aliceOptions, will: undefined }, CONNECT_MS);
  assert.equal(back.connack.sessionPresent, true);
  await sleep(500); // room for a second copy of the will to show up
  assert.equal(monitor.messages.filter((m) => m.topic === 'status/alice').length, 1, 'the will went exactly once');
  assert.equal(await b.metric('vigil_wills_fired_total'), 1);
});
