// A session and its will belong to the identity that created them (docs/acl.md, "Sessions
// belong to an identity"). Mallory, with a valid RS256 token of her own, connects with Alice's
// client id: refused (5.0 0x85, 3.1.1 0x02), and Alice keeps her connection, her session and
// her will. Client-id rules in the policy bind ids to identities. Both protocol versions.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { IClientOptions } from 'mqtt';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { jwtBrokerFixture } from '../helpers/jwt-broker.js';
import { sleep, uniqueId, VERSIONS, versionName, type Version } from '../helpers/mqtt.js';
import { waitUntil } from '../helpers/cluster.js';

const POLICY = {
  roles: {
    server: { publish: ['trusted/%u/#', 'status/#'], subscribe: ['trusted/%u/#'] },
    monitor: { subscribe: ['status/#', 'trusted/+/#'] },
  },
};
const BOUND_POLICY = { roles: { ...POLICY.roles, bound: { publish: ['trusted/%u/#'], clientIds: ['%u', '%u-*'] } } };

const fixture = jwtBrokerFixture('K1');
const pool = fixture.clients;
const CONNECT_MS = 15000; // a loaded CI machine verifies tokens slowly

const jwtBroker = (extra: Record<string, unknown> = {}, policy: object = POLICY): Promise<TestBroker> => fixture.start(policy, extra, { captureLogs: true });

const password = (sub: string, roles = ['server']) => fixture.password(sub, roles);

/** A persistent session with a will (5.0: delay 3 s), as the Alice has. */
async function persistent(v: Version, clientId: string, sub: string, willTopic: string): Promise<IClientOptions> {
  return {
    protocolVersion: v,
    clientId,
    clean: false,
    username: sub,
    password: await password(sub),
    ...(v === 5 ? { properties: { sessionExpiryInterval: 300 } } : {}),
    will: { topic: willTopic, payload: Buffer.from(`${sub} down`), qos: 1, retain: false, ...(v === 5 ? { properties: { willDelayInterval: 3 } } : {}) },
  };
}

/** The refusal code as the client's version sends it: 5.0 0x85, 3.1.1 0x02. */
const refusedAs = (v: Version) => (v === 5 ? 0x85 : 0x02);

describe('sessions belong to an identity', { timeout: 60000 }, () => {
  for (const v of VERSIONS) {
    it(`${versionName(v)}: another identity's CONNECT with the owner's client id is refused; the owner keeps connection, session and will`, async () => {
      const b = await jwtBroker({ willGraceMs: 3000 });
      const id = uniqueId('alice');
      const willTopic = `status/${id}`;
      const monitor = await pool.connect(b.url, { protocolVersion: 5, clientId: uniqueId('mon'), username: 'mon', password: await password('mon', ['monitor']) }, CONNECT_MS);
      await monitor.mqtt.subscribeAsync('status/#', { qos: 1 });

      const alice = await pool.connect(b.url, await persistent(v, id, 'alice', willTopic), CONNECT_MS);
      await alice.mqtt.subscribeAsync('trusted/alice/#', { qos: 1 });
      let aliceDisconnected = false;
      alice.mqtt.on('disconnect', () => (aliceDisconnected = true));
      alice.mqtt.on('close', () => (aliceDisconnected = true));

      // Mallory, with her own valid token, tries Alice's id: resume, and clean start
      for (const clean of [false, true]) {
        const err = await pool.connectRefused(b.url, { ...(await persistent(v, id, 'mallory', willTopic)), clean }, CONNECT_MS);
        assert.equal(err.code, refusedAs(v), `clean=${clean}: refused with ${refusedAs(v)}, got ${err.code}`);
      }
      assert.equal(await b.metric('vigil_takeovers_refused_total', { scope: 'local' }), 2);
      assert.equal(await b.metric('vigil_takeovers_total'), 0);

      // Alice is untouched: still connected, her subscription still delivers
      await alice.mqtt.publishAsync('trusted/alice/ping', 'still here', { qos: 1 });
      const [m] = await alice.waitForMessages(1, 10000);
      assert.equal(m.payload, 'still here');
      assert.equal(aliceDisconnected, false);
      assert.equal(alice.mqtt.connected, true);

      // Alice's machine dies: her will is still hers and still goes (after its delay)
      alice.mqtt.stream.destroy();
      await waitUntil(() => monitor.messages.length > 0, 20000, 'the will');
      assert.equal(monitor.messages[0].payload, 'alice down');

      // while the will waited, Mallory could not cancel it; now the owner's session is offline and still refuses her
      const err = await pool.connectRefused(b.url, await persistent(v, id, 'mallory', willTopic), CONNECT_MS);
      assert.equal(err.code, refusedAs(v));
      // Alice herself resumes her session
      const back = await pool.connect(b.url, await persistent(v, id, 'alice', willTopic), CONNECT_MS);
      assert.equal(back.connack.sessionPresent, true);
      await sleep(300);
      assert.equal(monitor.messages.filter((x) => x.topic === willTopic).length, 1, 'the will went once');
    });

    it(`${versionName(v)}: another identity cannot cancel a pending will by connecting with the client id`, async () => {
      const b = await jwtBroker({ willGraceMs: 3000 });
      const id = uniqueId('alice');
      const willTopic = `status/${id}`;
      const monitor = await pool.connect(b.url, { protocolVersion: 5, clientId: uniqueId('mon'), username: 'mon', password: await password('mon', ['monitor']) }, CONNECT_MS);
      await monitor.mqtt.subscribeAsync('status/#', { qos: 1 });
      // 3.1.1 clean session: after the connection is lost only the (grace) will holds the id
      const alice = await pool.connect(b.url, { ...(await persistent(v, id, 'alice', willTopic)), clean: v === 4 }, CONNECT_MS);
      alice.mqtt.stream.destroy();
      await alice.waitForClose();
      const err = await pool.connectRefused(b.url, { ...(await persistent(v, id, 'mallory', willTopic)), clean: false }, CONNECT_MS);
      assert.equal(err.code, refusedAs(v));
      const [will] = await monitor.waitForMessages(1, 20000);
      assert.equal(will.payload, 'alice down');
      assert.equal(await b.metric('vigil_wills_cancelled_total', { cause: 'reconnect' }), 0);
    });

    it(`${versionName(v)}: refused CONNECTs do not count as failed logins; the owner reconnects at once`, async () => {
      const b = await jwtBroker({ authFailuresPerAddress: 3 });
      const id = uniqueId('alice');
      await pool.connect(b.url, await persistent(v, id, 'alice', `status/${id}`), CONNECT_MS);
      for (let i = 0; i < 6; i++) assert.equal((await pool.connectRefused(b.url, await persistent(v, id, 'mallory', `status/${id}`), CONNECT_MS)).code, refusedAs(v));
      const again = await pool.connect(b.url, await persistent(v, id, 'alice', `status/${id}`), CONNECT_MS);
      assert.equal(again.connack.sessionPresent, true, 'the owner takes over her own session');
      assert.equal(await b.metric('vigil_takeovers_total'), 1);
    });

    it(`${versionName(v)}: client-id rules bind ids to identities (clientIds: ["%u", "%u-*"])`, async () => {
      const b = await jwtBroker({}, BOUND_POLICY);
      const as = async (clientId: string, sub: string, roles: string[]) =>
        ({ protocolVersion: v, clientId, username: sub, password: await password(sub, roles) }) as IClientOptions;
      await pool.connect(b.url, await as('alice', 'alice', ['bound']), CONNECT_MS);
      await pool.connect(b.url, await as('alice-sensor-1', 'alice', ['bound']), CONNECT_MS);
      for (const clientId of ['bob', 'bob-1', 'xalice', 'alice_1']) {
        const err = await pool.connectRefused(b.url, await as(clientId, 'alice', ['bound']), CONNECT_MS);
        assert.equal(err.code, refusedAs(v), clientId);
      }
      // a role without clientIds: any id, as before client-id rules existed
      await pool.connect(b.url, await as(uniqueId('anything'), 'mon', ['monitor']), CONNECT_MS);
      // a subject named like a pattern gains nothing: "*" is literal in a substituted value
      assert.equal((await pool.connectRefused(b.url, await as('bob', '*', ['bound']), CONNECT_MS)).code, refusedAs(v));
      await pool.connect(b.url, await as('*-1', '*', ['bound']), CONNECT_MS);
    });
  }

  it('VIGIL_SESSION_TAKEOVER=any lets another identity take the client id over (as before)', async () => {
    const b = await jwtBroker({ sessionTakeover: 'any' });
    const id = uniqueId('alice');
    const alice = await pool.connect(b.url, await persistent(5, id, 'alice', `status/${id}`), CONNECT_MS);
    const disconnected = alice.waitForDisconnect(5000);
    const mallory = await pool.connect(b.url, await persistent(5, id, 'mallory', `status/${id}`), CONNECT_MS);
    assert.equal(mallory.connack.sessionPresent, true);
    assert.equal((await disconnected).reasonCode, 0x8e);
  });

  it('auth=none: every client is "anonymous", so takeover works as it always did', async () => {
    const broker = await startBroker();
    try {
      const id = uniqueId('anon');
      const first = await pool.connect(broker.url, { protocolVersion: 5, clientId: id, username: 'alice', clean: false, properties: { sessionExpiryInterval: 60 } }, CONNECT_MS);
      const disconnected = first.waitForDisconnect(5000);
      const second = await pool.connect(broker.url, { protocolVersion: 5, clientId: id, username: 'mallory', clean: false, properties: { sessionExpiryInterval: 60 } }, CONNECT_MS);
      assert.equal(second.connack.sessionPresent, true);
      assert.equal((await disconnected).reasonCode, 0x8e);
    } finally {
      await pool.closeAll();
      await broker.close();
    }
  });
});
