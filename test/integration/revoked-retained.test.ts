// The retained "up" of a revoked server (issue 12): its will is blocked, so the "down" that
// would correct the retained "up" never comes. VIGIL_REVOKED_RETAINED decides: `keep` (the
// default) leaves it, `drop` deletes at revocation every retained message the subject published.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestBroker } from '../helpers/broker.js';
import { jwtBrokerFixture } from '../helpers/jwt-broker.js';
import { uniqueId, VERSIONS, versionName, waitFor, type Version } from '../helpers/mqtt.js';

const POLICY = { roles: { server: { publish: ['trusted/%u/#'] }, monitor: { subscribe: ['trusted/#'] } } };

const fixture = jwtBrokerFixture();
const clients = fixture.clients;

async function scenario(version: Version, revokedRetained: 'keep' | 'drop'): Promise<{ b: TestBroker; seen: string[] }> {
  const b = await fixture.start(POLICY, { revokedRetained });
  const token = fixture.password;
  // srv-1 will be revoked; srv-2 is its neighbour whose retained state must stay
  const srv1 = await clients.connect(b.url, {
    protocolVersion: version, clientId: 'srv-1', username: '', password: await token('srv-1', ['server']),
    will: { topic: 'trusted/srv-1/state', payload: Buffer.from('down'), qos: 1, retain: true },
  });
  await srv1.mqtt.publishAsync('trusted/srv-1/state', 'up', { qos: 1, retain: true });
  await srv1.mqtt.publishAsync('trusted/srv-1/info', 'v1', { qos: 1, retain: true });
  const srv2 = await clients.connect(b.url, { protocolVersion: version, clientId: 'srv-2', username: '', password: await token('srv-2', ['server']) });
  await srv2.mqtt.publishAsync('trusted/srv-2/state', 'up', { qos: 1, retain: true });

  const closed = srv1.waitForClose(10_000);
  await b.server.identity.revocations.revokeSubject('srv-1');
  await closed;
  await waitFor(async () => (await b.metric('vigil_wills_denied_total', { reason: 'revoked' })) === 1, 10_000, 'the will blocked');

  const monitor = await clients.connect(b.url, { protocolVersion: version, clientId: uniqueId('mon'), username: '', password: await token('mon', ['monitor']) });
  await monitor.mqtt.subscribeAsync('trusted/#', { qos: 1 });
  const expected = revokedRetained === 'keep' ? 3 : 1;
  await monitor.waitForMessages(expected, 10_000);
  // the whole retained snapshot has been sent: nothing more is on its way
  await waitFor(async () => (await b.metric('vigil_retained_snapshots_ended_total', { how: 'complete' })) >= 1, 10_000, 'retained snapshot complete');
  return { b, seen: monitor.messages.map((m) => `${m.topic}=${m.payload}`).sort() };
}

for (const version of VERSIONS) {
  describe(`${versionName(version)}: the retained messages of a revoked identity`, () => {
    test('VIGIL_REVOKED_RETAINED=keep (default): they stay, and the blocked will does not replace them', async () => {
      const { b, seen } = await scenario(version, 'keep');
      assert.deepEqual(seen, ['trusted/srv-1/info=v1', 'trusted/srv-1/state=up', 'trusted/srv-2/state=up']);
      assert.equal(await b.metric('vigil_messages_dropped_total', { reason: 'revoked_retained' }), 0);
    });

    test('VIGIL_REVOKED_RETAINED=drop: they are deleted at revocation; other identities\' stay', async () => {
      const { b, seen } = await scenario(version, 'drop');
      assert.deepEqual(seen, ['trusted/srv-2/state=up']);
      assert.equal(await b.metric('vigil_messages_dropped_total', { reason: 'revoked_retained' }), 2);
      assert.equal(b.server.broker.deps.retained.count(), 1);
    });
  });
}
