// The router: which local sessions, and which other nodes, need a message. Pure: real
// Session objects in the router's trie, and for the cluster cases a route table answer
// given by hand (the Redis-backed RouteTable itself is tested in test/cluster/routes).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Router, type RemoteMatch, type RemoteRoutes } from '../../src/broker/router.js';
import { Session } from '../../src/broker/session.js';
import type { StoredMessage, Subscription } from '../../src/store/types.js';

function session(clientId: string): Session {
  return new Session(clientId, 0, { maxQueued: 10, maxQueuedBytes: 1 << 20, budget: { limit: 1 << 24, used: 0 }, overflow: 'drop-oldest' }, { dropped() {}, sent() {}, snapshotEnded() {} } as never, {
    receiveVerdicts: () => null,
  } as never);
}

function sub(filter: string, o: Partial<Subscription> = {}): Subscription {
  return { filter, qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0, ...o };
}

function message(topic: string, origin = 'pub'): StoredMessage {
  return { topic, payload: Buffer.from('x'), qos: 2, retain: true, origin };
}

/** A route table answer fixed by the test: what other members have for any topic. */
function remoteRoutes(member: string, answer: (topic: string) => RemoteMatch): RemoteRoutes & { asked: string[] } {
  const asked: string[] = [];
  return {
    member,
    asked,
    route(topic) {
      asked.push(topic);
      return answer(topic);
    },
  };
}

test('overlapping subscriptions of one session: one entry, the highest QoS, every subscription identifier [MQTT-3.3.4-2, MQTT-3.3.4-3]', () => {
  const router = new Router();
  const s = session('s');
  router.add(s, sub('a/+', { qos: 0, subscriptionId: 1 }));
  router.add(s, sub('a/#', { qos: 2, subscriptionId: 2, retainAsPublished: true }));
  router.add(s, sub('a/b', { qos: 1 }));
  const r = router.route(message('a/b'));
  assert.deepEqual(r.sessions, [s]);
  assert.equal(s.matchQos, 2);
  assert.equal(s.matchRetainAsPublished, true);
  assert.deepEqual([...(s.matchIds ?? [])].sort(), [1, 2]);
  assert.equal(r.remote, undefined, 'one node: no remote part');
});

test('a second routing pass starts afresh: the answer and the per-session match state are rebuilt', () => {
  const router = new Router();
  const s = session('s');
  const t = session('t');
  router.add(s, sub('a/#', { qos: 2, subscriptionId: 7 }));
  router.add(t, sub('b', { qos: 0 }));
  assert.deepEqual(router.route(message('a/x')).sessions, [s]);
  const again = router.route(message('b'));
  assert.deepEqual(again.sessions, [t]);
  assert.equal(t.matchQos, 0);
  assert.equal(t.matchIds, undefined);
  router.remove(t, { filter: 'b' });
  assert.deepEqual(router.route(message('b')).sessions, [], 'removed: no longer routed');
});

test('No Local keeps a message from its publisher\'s own session [MQTT-3.8.3-3]; onlyClients limits the local part', () => {
  const router = new Router();
  const pub = session('pub');
  const other = session('other');
  const third = session('third');
  router.add(pub, sub('t', { noLocal: true }));
  router.add(other, sub('t'));
  router.add(third, sub('t'));
  assert.deepEqual(router.route(message('t', 'pub')).sessions, [other, third]);
  assert.deepEqual(router.route(message('t', 'someone')).sessions.length, 3, 'No Local only concerns the publisher');
  assert.deepEqual(router.route(message('t', 'someone'), { onlyClients: new Set(['third']) }).sessions, [third]);
});

test('one node: one member of each matching shared group is picked, apart from the non-shared sessions', () => {
  const router = new Router();
  const [g1, g2, plain] = [session('g1'), session('g2'), session('plain')];
  router.add(g1, sub('t/+', { group: 'workers' }));
  router.add(g2, sub('t/+', { group: 'workers' }));
  router.add(plain, sub('t/#'));
  const picked: string[] = [];
  for (let i = 0; i < 4; i++) {
    const r = router.route(message('t/x'));
    assert.deepEqual(r.sessions, [plain]);
    assert.equal(r.shared.length, 1, 'one member per group');
    picked.push(r.shared[0].subscriber.clientId);
  }
  assert.deepEqual(new Set(picked), new Set(['g1', 'g2']), 'the group\'s members take turns');
});

test('cluster: the route table is asked in the same call; shared picks are split into this node\'s and other nodes\'', () => {
  const router = new Router();
  const local = session('local');
  const member = session('member');
  router.add(local, sub('t/#'));
  router.add(member, sub('t/+', { group: 'g' }));
  router.remote = remoteRoutes('node-a/1', () => ({
    members: new Set(['node-b/1']),
    shared: [
      { group: 'g', filter: 't/+', member: 'node-a/1' },
      { group: 'h', filter: 't/#', member: 'node-c/1' },
    ],
  }));
  const r = router.route(message('t/x'));
  assert.deepEqual(r.sessions, [local]);
  assert.deepEqual(r.shared, [], 'in a cluster the route table picks shared members, not the local trie');
  assert.deepEqual(r.localShared, [{ group: 'g', filter: 't/+', member: 'node-a/1' }]);
  assert.deepEqual(r.remoteShared, [{ group: 'h', filter: 't/#', member: 'node-c/1' }]);
  assert.deepEqual([...r.remote!.members], ['node-b/1']);
  assert.equal(router.pickShared('t/+', 'g')?.subscriber, member, 'the local member of a group picked for this node');
  assert.equal(router.pickShared('t/+', 'nope'), undefined);
});

test('cluster: a message forwarded here is routed locally only (remote: false)', () => {
  const router = new Router();
  const local = session('local');
  router.add(local, sub('t'));
  const remote = remoteRoutes('node-a/1', () => ({ members: new Set(['node-b/1']), shared: [{ group: 'g', filter: 't', member: 'node-a/1' }] }));
  router.remote = remote;
  const r = router.route(message('t'), { remote: false });
  assert.deepEqual(r.sessions, [local]);
  assert.equal(r.remote, undefined);
  assert.deepEqual(r.localShared, []);
  assert.deepEqual(remote.asked, [], 'the route table is not asked');
  // and the next full pass does not see leftovers of either
  const full = router.route(message('t'));
  assert.equal(full.localShared.length, 1);
  assert.deepEqual(remote.asked, ['t']);
  const localAgain = router.route(message('t'), { remote: false });
  assert.equal(localAgain.remote, undefined, 'nothing left over from the full pass');
  assert.deepEqual(localAgain.localShared, []);
});
