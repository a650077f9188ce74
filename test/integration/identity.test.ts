// Identity end to end: the seed report's scenario (a will that survives key rotation and
// token expiry), revocation and policy changes that block a will, will authorization at
// CONNECT, bad tokens, single-flight JWKS refetch, MQTT 5 re-authentication, and the proof
// that steady-state publishing makes no worker round trip.
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, sleep, withTimeout } from '../helpers/mqtt.js';
import { jwksDocument, makeKey, malicious, signHmac, signToken, startJwksServer, tempDir, type TempDir, type TestKey } from '../helpers/jwt.js';
import { reauthenticate } from '../../src/client/reauthenticate.js';

const USER = 'x3000c0s9b0n0';
const STATE = `trusted/${USER}/dvs/server/state`;
const POLICY = {
  roles: {
    server: { publish: ['trusted/%u/#'], subscribe: ['trusted/%u/#'] },
    monitor: { subscribe: ['trusted/+/dvs/server/state'] },
  },
};

let dir: TempDir;
let keyA: TestKey;
let keyB: TestKey;
let broker: TestBroker | undefined;
const clients = new ClientPool();

async function jwtBroker(extra: Record<string, unknown> = {}): Promise<TestBroker> {
  const jwks = await dir.write('jwks.json', jwksDocument([keyA, keyB]));
  const acl = await dir.write('acl.json', POLICY);
  broker = await startBroker({ auth: 'jwt', jwks, acl, jwtClockToleranceS: 0, jwtAlgorithms: ['RS256', 'ES256'], ...extra }, { captureLogs: true });
  return broker;
}

const serverToken = (key: TestKey, expiresInS = 3600, sub = USER, roles = ['server']) => signToken(key, { sub, expiresInS, claims: { roles } });

async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

beforeEach(async () => {
  dir = await tempDir();
  keyA = await makeKey('KEY-A', 'RS256');
  keyB = await makeKey('KEY-B', 'ES256');
});

afterEach(async () => {
  await clients.closeAll();
  await broker?.close();
  broker = undefined;
  await dir.remove();
});

describe('the seed scenario: a will survives key rotation and token expiry', () => {
  for (const version of [4, 5] as const) {
    test(`MQTT ${version === 5 ? '5.0' : '3.1.1'}: KEY-A rotated out, token expired, socket destroyed → monitor gets "down"`, async () => {
      const b = await jwtBroker({ tokenExpiry: 'ignore' });
      const monitor = await clients.connect(b.url, { protocolVersion: version, clientId: 'monitor', username: '', password: Buffer.from(await signToken(keyB, { sub: 'mon', claims: { roles: ['monitor'] } })) });
      await monitor.mqtt.subscribeAsync('trusted/+/dvs/server/state', { qos: 1 });

      const server = await clients.connect(b.url, {
        protocolVersion: version,
        clientId: USER,
        username: USER,
        password: Buffer.from(await serverToken(keyA, 3)), // 2-3 s of life (exp counts from the current whole second)
        will: { topic: STATE, payload: Buffer.from('down'), qos: 1, retain: true },
      });
      await server.mqtt.publishAsync(STATE, 'up', { qos: 1, retain: true });
      await monitor.waitForMessages(1, 3000);
      assert.equal(monitor.messages[0].payload, 'up');

      // rotate: KEY-A leaves the set; prove the broker has reloaded by refusing a fresh KEY-A token
      await dir.write('jwks.json', jwksDocument([keyB]));
      const freshA = await serverToken(keyA, 3600, 'someone-else');
      await waitFor(async () => {
        try {
          const c = await clients.connect(b.url, { protocolVersion: version, clientId: `probe-${Date.now()}`, username: '', password: Buffer.from(freshA) });
          c.mqtt.end(true);
          return false;
        } catch {
          return true;
        }
      }, 8000, 'JWKS reload');
      await sleep(3200); // past the token's exp; tokenExpiry=ignore keeps the connection
      assert.equal(server.mqtt.connected, true);

      server.mqtt.stream.destroy(); // the machine dies
      const got = await monitor.waitForMessages(2, 5000);
      assert.equal(got[1].topic, STATE);
      assert.equal(got[1].payload, 'down');
      assert.equal(await b.metric('vigil_wills_fired_total'), 1);
      assert.ok(b.logs.some((l) => l.msg === 'will published' && l.clientId === USER));
    });
  }
});

describe('a revoked identity or permission blocks the will', () => {
  test('revoked subject: connection closed, no will, log line and counter say why', async () => {
    const b = await jwtBroker();
    const monitor = await clients.connect(b.url, { protocolVersion: 5, username: '', password: Buffer.from(await signToken(keyB, { sub: 'mon', claims: { roles: ['monitor'] } })) });
    await monitor.mqtt.subscribeAsync('trusted/+/dvs/server/state', { qos: 1 });
    const server = await clients.connect(b.url, { protocolVersion: 5, clientId: USER, username: '', password: Buffer.from(await serverToken(keyA)), will: { topic: STATE, payload: Buffer.from('down'), qos: 1, retain: false } });
    const disconnected = server.waitForDisconnect(3000);
    await b.server.identity.revocations.revokeSubject(USER);
    assert.equal((await disconnected).reasonCode, 0x87);
    await waitFor(async () => (await b.metric('vigil_wills_denied_total', { reason: 'revoked' })) === 1, 3000, 'will denied metric');
    await sleep(300);
    assert.equal(monitor.messages.length, 0);
    const line = b.logs.find((l) => l.msg === 'will denied');
    assert.ok(line, 'a log line for the denied will');
    assert.equal(line.reason, 'revoked');
    assert.equal(line.clientId, USER);
    // and the revoked subject cannot come back
    await assert.rejects(clients.connect(b.url, { protocolVersion: 5, username: '', password: Buffer.from(await serverToken(keyA)) }));
  });

  test('policy changed to remove the permission: no will', async () => {
    const b = await jwtBroker();
    const monitor = await clients.connect(b.url, { protocolVersion: 5, username: '', password: Buffer.from(await signToken(keyB, { sub: 'mon', claims: { roles: ['monitor'] } })) });
    await monitor.mqtt.subscribeAsync('trusted/+/dvs/server/state', { qos: 1 });
    const server = await clients.connect(b.url, { protocolVersion: 4, clientId: USER, username: '', password: Buffer.from(await serverToken(keyA)), will: { topic: STATE, payload: Buffer.from('down'), qos: 1, retain: false } });
    await server.mqtt.publishAsync(STATE, 'up', { qos: 1 });
    await monitor.waitForMessages(1, 3000);
    const before = await b.metric('vigil_acl_reloads_total');
    await dir.write('acl.json', { roles: { server: { subscribe: ['trusted/%u/#'] }, monitor: POLICY.roles.monitor } });
    await waitFor(async () => (await b.metric('vigil_acl_reloads_total')) > before, 8000, 'ACL reload');
    server.mqtt.stream.destroy();
    await waitFor(async () => (await b.metric('vigil_wills_denied_total')) === 1, 3000, 'will denied');
    await sleep(300);
    assert.equal(monitor.messages.length, 1, 'only "up", no will');
    const line = b.logs.find((l) => l.msg === 'will denied');
    assert.ok(line);
    assert.notEqual(line.reason, 'revoked');
  });
});

describe('will authorization at CONNECT', () => {
  test('a will topic the identity may not publish to refuses CONNECT: 5.0 0x87, 3.1.1 0x05', async () => {
    const b = await jwtBroker();
    const token = Buffer.from(await serverToken(keyA));
    const e5 = await clients.connectRefused(b.url, { protocolVersion: 5, username: '', password: token, will: { topic: 'trusted/other/x', payload: Buffer.from('down'), qos: 0, retain: false } });
    assert.equal(e5.code, 0x87);
    const e4 = await clients.connectRefused(b.url, { protocolVersion: 4, username: '', password: token, will: { topic: 'trusted/other/x', payload: Buffer.from('down'), qos: 0, retain: false } });
    assert.equal(e4.code, 5);
    // allowed will topic connects
    await clients.connect(b.url, { protocolVersion: 5, username: '', password: token, will: { topic: STATE, payload: Buffer.from('down'), qos: 0, retain: false } });
  });
});

describe('bad tokens are refused with the right code and a logged reason', () => {
  test('expired, not yet valid, alg none, HS256 with the RSA public key, unknown crit, swapped signature, garbage, username mismatch, no token', async () => {
    const b = await jwtBroker();
    const claims = { sub: USER, roles: ['server'] };
    const cases: [string, string | undefined, string?][] = [
      ['expired', await serverToken(keyA, -60)],
      ['not yet valid', await signToken(keyA, { sub: USER, notBeforeInS: 600 })],
      ['alg none', malicious.algNone({ ...claims, exp: Math.floor(Date.now() / 1000) + 600 })],
      ['hs256 confusion', await malicious.hs256WithPublicKey(keyA, claims)],
      ['unknown crit', await malicious.unknownCrit(keyA, claims)],
      ['swapped signature', await malicious.swappedSignature(keyA, claims, await serverToken(keyB))],
      ['garbage', 'not-a-jwt'],
      ['username mismatch', await serverToken(keyA), 'somebody-else'],
      ['no token', undefined],
    ];
    for (const [name, token, username] of cases) {
      for (const version of [4, 5] as const) {
        const err = await clients.connectRefused(b.url, { protocolVersion: version, username: username ?? (token === undefined ? undefined : ''), password: token === undefined ? undefined : Buffer.from(token) });
        if (version === 5) assert.ok([0x86, 0x87].includes(err.code!), `${name}: 5.0 code ${err.code}`);
        else assert.ok([4, 5].includes(err.code!), `${name}: 3.1.1 code ${err.code}`);
      }
    }
    const refusals = b.logs.filter((l) => l.msg === 'connect refused');
    assert.ok(refusals.length >= cases.length * 2);
    for (const l of refusals) assert.ok(typeof l.reason === 'string' && (l.reason as string).length > 0);
    // never the token itself
    const text = JSON.stringify(b.logs);
    for (const [, token] of cases) if (token && token.length > 20) assert.ok(!text.includes(token), 'a token reached the log');
    assert.ok((await b.metric('vigil_auth_verifications_total', { outcome: 'failure' })) > 0 || (await b.metric('vigil_auth_verifications_total')) > 0);
  });

  test('HS256 tokens are accepted only with a configured secret', async () => {
    const secret = 's'.repeat(40);
    const b = await jwtBroker({ jwtSecret: secret, jwtAlgorithms: ['RS256', 'HS256'] });
    const good = await signHmac(secret, { sub: USER, roles: ['server'] });
    await clients.connect(b.url, { protocolVersion: 5, username: '', password: Buffer.from(good) });
    const wrong = await signHmac('x'.repeat(40), { sub: USER, roles: ['server'] });
    const err = await clients.connectRefused(b.url, { protocolVersion: 5, username: '', password: Buffer.from(wrong) });
    assert.equal(err.code, 0x86);
  });
});

describe('JWKS from a URL: unknown kid refetch is single-flight and rate-limited', () => {
  test('a burst of 100 connections with a new kid fetches once; another unknown kid within the interval fetches nothing', async () => {
    const jwksServer = await startJwksServer([keyA]);
    try {
      const acl = await dir.write('acl.json', POLICY);
      broker = await startBroker({ auth: 'jwt', jwks: jwksServer.url, acl, jwksMinRefreshS: 30, authWorkers: 2 }, { captureLogs: true });
      const atStart = jwksServer.requests;
      assert.equal(atStart, 1);
      const keyC = await makeKey('KEY-C', 'RS256');
      jwksServer.setKeys([keyA, keyC]);
      jwksServer.setDelayMs(100);
      const tokens = await Promise.all(Array.from({ length: 100 }, (_, i) => signToken(keyC, { sub: `dev${i}`, claims: { roles: ['server'] } })));
      await Promise.all(tokens.map((t, i) => clients.connect(broker!.url, { protocolVersion: 5, clientId: `burst-${i}`, username: '', password: Buffer.from(t) }, 10000)));
      assert.equal(jwksServer.requests, atStart + 1, 'exactly one refetch for the burst');
      const keyD = await makeKey('KEY-D', 'RS256');
      const err = await clients.connectRefused(broker.url, { protocolVersion: 5, username: '', password: Buffer.from(await signToken(keyD, { sub: 'late' })) });
      assert.equal(err.code, 0x86);
      assert.equal(jwksServer.requests, atStart + 1, 'no refetch within VIGIL_JWKS_MIN_REFRESH_S');
    } finally {
      await clients.closeAll();
      await broker?.close();
      broker = undefined;
      await jwksServer.close();
    }
  });
});

describe('MQTT 5 re-authentication', () => {
  const jwtConnect = async (token: string, extra: Record<string, unknown> = {}) =>
    clients.connect(broker!.url, { protocolVersion: 5, clientId: USER, properties: { authenticationMethod: 'JWT', authenticationData: Buffer.from(token) }, ...extra });

  test('a new token extends the connection past the first token\'s exp', async () => {
    await jwtBroker({ tokenExpiry: 'disconnect' });
    const c = await jwtConnect(await serverToken(keyA, 3)); // 2-3 s of life
    await reauthenticate(c.mqtt, await serverToken(keyB, 3600));
    await sleep(3200); // past the first token's exp, which is at most 3 s after it was signed
    assert.equal(c.mqtt.connected, true, 'still connected after the first token expired');
    await c.mqtt.publishAsync(STATE, 'still up', { qos: 1 });
  });

  test('without re-authentication the connection ends at exp', async () => {
    await jwtBroker({ tokenExpiry: 'disconnect' });
    // exp is in whole seconds from the current second: 3 s leaves the token 2-3 s of life, so a
    // busy machine's CONNECT still arrives before it (with 1 s it could have had 1 ms)
    const c = await jwtConnect(await serverToken(keyA, 3));
    const d = await c.waitForDisconnect(20000);
    assert.equal(d.reasonCode, 0x87);
  });

  test('a token for another subject is refused and the connection closed', async () => {
    await jwtBroker();
    const c = await jwtConnect(await serverToken(keyA));
    const closed = c.waitForClose(3000);
    await assert.rejects(reauthenticate(c.mqtt, await serverToken(keyA, 3600, 'another-subject')));
    await closed;
  });

  test('a re-authentication that removes a role denies the next publish', async () => {
    await jwtBroker();
    const c = await jwtConnect(await serverToken(keyA));
    await c.mqtt.publishAsync(STATE, 'allowed', { qos: 1 });
    await reauthenticate(c.mqtt, await serverToken(keyA, 3600, USER, []));
    const ack = await withTimeout(
      new Promise<{ reasonCode?: number }>((resolve, reject) => c.mqtt.publish(STATE, 'denied', { qos: 1 }, (err, packet) => (err ? resolve({ reasonCode: (err as { code?: number }).code }) : packet ? resolve(packet as { reasonCode?: number }) : reject(new Error('no ack'))))),
      3000,
      'PUBACK',
    );
    assert.equal(ack.reasonCode, 0x87);
  });
});

describe('steady-state publishing stays off the worker pool', () => {
  test('10,000 publishes after the first add no pool task', async () => {
    const b = await jwtBroker();
    const sub = await clients.connect(b.url, { protocolVersion: 5, clientId: 'sub', username: '', password: Buffer.from(await serverToken(keyA, 3600, 'sub', ['server'])) });
    await sub.mqtt.subscribeAsync('trusted/sub/#', { qos: 0 });
    const pub = await clients.connect(b.url, { protocolVersion: 5, clientId: 'pub', username: '', password: Buffer.from(await serverToken(keyA)) });
    await pub.mqtt.publishAsync(STATE, 'first', { qos: 1 });
    const tasksAfterFirst = await b.metric('vigil_auth_pool_tasks_total');
    for (let i = 0; i < 10_000; i++) pub.mqtt.publish(STATE, `m${i}`, { qos: 0 });
    await pub.mqtt.publishAsync(STATE, 'last', { qos: 1 });
    assert.equal(await b.metric('vigil_messages_in_total'), 10_002);
    assert.equal(await b.metric('vigil_auth_pool_tasks_total'), tasksAfterFirst);
    assert.ok(tasksAfterFirst >= 1, 'the first publish was evaluated in the pool');
  });
});
