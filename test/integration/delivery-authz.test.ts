// Authorization at delivery (issue 12, problems 2 and 3), end to end with real RS256 tokens:
// a wildcard subscription beside a deny rule is granted and the denied topics are held back
// message by message — live, retained on subscribe and queued for an offline session — and a
// policy reload that removes a permission stops an existing subscription at once.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestBroker } from '../helpers/broker.js';
import { jwtBrokerFixture } from '../helpers/jwt-broker.js';
import { waitFor, subackCodes, uniqueId, VERSIONS, versionName, type TestClient, type Version } from '../helpers/mqtt.js';

const POLICY = {
  roles: {
    // problem 3: a role allowed everything, with one deny rule
    reader: { subscribe: ['#'], deny: { subscribe: ['fleet/secret/#'] } },
    monitor: { subscribe: ['fleet/+/state'] },
    writer: { publish: ['#'] },
  },
};

const fixture = jwtBrokerFixture();
const clients = fixture.clients;

const jwtBroker = (): Promise<TestBroker> => fixture.start(POLICY);

async function as(b: TestBroker, version: Version, sub: string, roles: string[], extra: Record<string, unknown> = {}): Promise<TestClient> {
  const password = await fixture.password(sub, roles);
  return clients.connect(b.url, { protocolVersion: version, clientId: uniqueId(sub), username: '', password, ...extra });
}

const denied = (b: TestBroker) => b.metric('vigil_messages_dropped_total', { reason: 'not_authorized' });

async function reloadPolicy(b: TestBroker, policy: object): Promise<void> {
  const before = await b.metric('vigil_acl_reloads_total', { outcome: 'ok' });
  await fixture.dir.write('acl.json', policy);
  await waitFor(async () => (await b.metric('vigil_acl_reloads_total', { outcome: 'ok' })) > before, 20_000, 'ACL reload');
}

for (const version of VERSIONS) {
  describe(`${versionName(version)}: wildcard subscriptions beside a deny rule`, () => {
    test('# and +/+ are granted; denied topics are not delivered live', async () => {
      const b = await jwtBroker();
      const reader = await as(b, version, 'reader', ['reader']);
      assert.deepEqual(await subackCodes(reader.mqtt, { '#': { qos: 1 }, '+/+': { qos: 1 } }), [1, 1]);
      const refused = await subackCodes(reader.mqtt, { 'fleet/secret/+': { qos: 1 } });
      assert.deepEqual(refused, [version === 5 ? 0x87 : 0x80], 'a filter the deny covers whole is still refused');

      const writer = await as(b, version, 'writer', ['writer']);
      await writer.mqtt.publishAsync('fleet/secret/keys', 'k', { qos: 1 });
      await writer.mqtt.publishAsync('fleet/secret', 's', { qos: 1 }); // matches +/+ and the deny (# covers the parent level)
      await writer.mqtt.publishAsync('fleet/open', 'o', { qos: 1 });
      await writer.mqtt.publishAsync('fleet/a/state', 'up', { qos: 0 });
      // fleet/open reaches both # and +/+ but is delivered once [MQTT-3.3.4-2]; the QoS 0 one comes after it
      await reader.waitForMessages(1, 10_000, 'fleet/a/state');
      assert.deepEqual(reader.messages.map((m) => m.topic).sort(), ['fleet/a/state', 'fleet/open']);
      await waitFor(async () => (await denied(b)) === 2, 10_000, 'two denied deliveries counted');
    });

    test('retained messages on denied topics are not sent on subscribe', async () => {
      const b = await jwtBroker();
      const writer = await as(b, version, 'writer', ['writer']);
      await writer.mqtt.publishAsync('fleet/secret/x', 'hidden', { qos: 1, retain: true });
      await writer.mqtt.publishAsync('fleet/open/x', 'shown', { qos: 1, retain: true });
      const reader = await as(b, version, 'reader', ['reader']);
      assert.deepEqual(await subackCodes(reader.mqtt, { '#': { qos: 1 } }), [1]);
      await reader.waitForMessages(1, 10_000, 'fleet/open/x');
      await waitFor(async () => (await denied(b)) === 1, 10_000, 'the retained secret counted as denied');
      assert.deepEqual(reader.messages.map((m) => m.payload), ['shown']);
    });

    test('messages queued for an offline session on denied topics are not delivered at resume', async () => {
      const b = await jwtBroker();
      const password = await fixture.password('reader', ['reader']);
      const clientId = uniqueId('offline-reader');
      const persistent = version === 5 ? { clean: false, properties: { sessionExpiryInterval: 300 } } : { clean: false };
      const first = await clients.connect(b.url, { protocolVersion: version, clientId, username: '', password, ...persistent });
      assert.deepEqual(await subackCodes(first.mqtt, { '#': { qos: 1 } }), [1]);
      await first.mqtt.endAsync();

      const writer = await as(b, version, 'writer', ['writer']);
      for (let i = 0; i < 3; i++) await writer.mqtt.publishAsync(`fleet/secret/${i}`, `s${i}`, { qos: 1 });
      await writer.mqtt.publishAsync('fleet/open/1', 'o1', { qos: 1 });
      await waitFor(async () => (await denied(b)) === 3, 10_000, 'denied before queueing');
      const queued = [...b.server.broker.sessions.get(clientId)!.pendingMessages()].map((p) => p.message.topic);
      assert.deepEqual(queued, ['fleet/open/1'], 'an undeliverable message takes no room in the offline queue');

      const again = await clients.connect(b.url, { protocolVersion: version, clientId, username: '', password, ...persistent });
      assert.equal(again.connack.sessionPresent, true);
      await again.waitForMessages(1, 10_000);
      assert.deepEqual(again.messages.map((m) => m.topic), ['fleet/open/1']);
    });
  });

  describe(`${versionName(version)}: a policy reload applies to existing subscriptions`, () => {
    test('a subscription stops receiving once a reload removes the permission, queued messages too', async () => {
      const b = await jwtBroker();
      const monitor = await as(b, version, 'mon', ['monitor']);
      await monitor.mqtt.subscribeAsync('fleet/+/state', { qos: 1 });
      const password = await fixture.password('mon2', ['monitor']);
      const clientId = uniqueId('offline-monitor');
      const persistent = version === 5 ? { clean: false, properties: { sessionExpiryInterval: 300 } } : { clean: false };
      const away = await clients.connect(b.url, { protocolVersion: version, clientId, username: '', password, ...persistent });
      await away.mqtt.subscribeAsync('fleet/+/state', { qos: 1 });
      await away.mqtt.endAsync();
      const reader = await as(b, version, 'reader', ['reader']);
      await reader.mqtt.subscribeAsync('fleet/#', { qos: 1 });

      const writer = await as(b, version, 'writer', ['writer']);
      await writer.mqtt.publishAsync('fleet/a/state', 'before', { qos: 1 });
      await monitor.waitForMessages(1, 10_000);
      await reader.waitForMessages(1, 10_000);
      assert.equal(b.server.broker.sessions.get(clientId)!.queued, 1, 'queued for the offline monitor while allowed');

      await reloadPolicy(b, { roles: { ...POLICY.roles, monitor: { publish: ['fleet/+/state'] } } });
      await writer.mqtt.publishAsync('fleet/a/state', 'after', { qos: 1 });
      // the reader still may: its copy is the proof the message was routed
      await reader.waitForMessages(2, 10_000);
      await waitFor(async () => (await denied(b)) === 2, 10_000, 'both monitors denied');
      assert.deepEqual(monitor.messages.map((m) => m.payload), ['before']);

      // the one queued while it was allowed is held back at resume: the policy now decides
      const again = await clients.connect(b.url, { protocolVersion: version, clientId, username: '', password, ...persistent });
      assert.equal(again.connack.sessionPresent, true);
      await waitFor(async () => (await denied(b)) === 3, 10_000, 'the queued one denied at resume');
      assert.equal(b.server.broker.sessions.get(clientId)!.queued, 0);
      assert.equal(again.messages.length, 0);

      // and a reload that gives the permission back applies at once as well
      await reloadPolicy(b, POLICY);
      await writer.mqtt.publishAsync('fleet/a/state', 'back', { qos: 1 });
      await monitor.waitForMessages(2, 10_000);
      assert.deepEqual(monitor.messages.map((m) => m.payload), ['before', 'back']);
    });
  });
}

describe('delivery verdicts are shared by an identity class', () => {
  test('a fan-out to many subscribers of one role evaluates each topic once', async () => {
    const b = await jwtBroker();
    const subscribers: TestClient[] = [];
    for (let i = 0; i < 5; i++) {
      const c = await as(b, 5, `mon-${i}`, ['monitor']);
      await c.mqtt.subscribeAsync('fleet/+/state', { qos: 0 });
      subscribers.push(c);
    }
    const writer = await as(b, 5, 'writer', ['writer']);
    const evaluations = await b.metric('vigil_acl_delivery_evaluations_total');
    const tasks = await b.metric('vigil_auth_pool_tasks_total');
    for (let round = 0; round < 3; round++) {
      await writer.mqtt.publishAsync('fleet/a/state', `r${round}`, { qos: 1 });
      await writer.mqtt.publishAsync('fleet/b/state', `r${round}`, { qos: 1 });
    }
    for (const c of subscribers) await c.waitForMessages(6, 10_000);
    assert.equal((await b.metric('vigil_acl_delivery_evaluations_total')) - evaluations, 2, 'two topics, one evaluation each for the whole role');
    // the writer's two publish checks are the only pool work: deliveries never go there
    assert.equal((await b.metric('vigil_auth_pool_tasks_total')) - tasks, 2);
  });
});
