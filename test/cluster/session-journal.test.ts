// The journal of persistent cluster sessions (src/cluster/session-journal.ts) on a real Redis:
// one cluster node with the broker's cluster side in this process, a session driven over a
// recording link (no socket). What a delivery to the session writes, when its publisher may
// be acknowledged, and how a session whose writes failed while Redis was away is saved whole
// once Redis is back.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { createTestContext, type TestContext } from '../helpers/channel-context.js';
import { ClusterNode } from '../../src/cluster/node.js';
import { ClusterBridge } from '../../src/cluster/bridge.js';
import { RedisSessionStore } from '../../src/store/redis/sessions.js';
import type { Session } from '../../src/broker/session.js';
import type { SessionLink } from '../../src/broker/session-ports.js';
import type { OutgoingPublish } from '../../src/protocol/publish-encoder.js';
import type { StoredMessage } from '../../src/store/types.js';
import { Closer, waitFor } from './support.js';

describe('cluster session journal', { timeout: 60_000 }, () => {
  let redis: TestRedis;
  let test: TestContext;
  let node: ClusterNode;
  let bridge: ClusterBridge;
  let store: RedisSessionStore;
  const closer = new Closer();

  before(async () => {
    redis = await startRedis({ appendonly: true });
    const prefix = randomPrefix('journal');
    test = createTestContext();
    // a lease that outlives a 1 s outage: the node stays owner and may checkpoint after it
    node = new ClusterNode({
      config: { redisUrl: redis.url, redisClusterNodes: [], redisPrefix: prefix, heartbeatMs: 500, nodeTimeoutMs: 8000, nodeId: 'j' },
      hooks: { fireWill: () => undefined },
    });
    bridge = new ClusterBridge(test.ctx.broker, node, test.ctx.log, test.ctx.metrics);
    await node.start();
    store = new RedisSessionStore({ redis: closer.redis({ url: redis.url }), keys: node.keys });
  });
  after(async () => {
    await bridge?.settle();
    await node?.stop().catch(() => undefined);
    test?.close();
    await closer.closeAll();
    await redis?.stop();
  });

  /** A connection that records what is written to it; PUBLISHes as "payload@qos#packetId". */
  function recordingLink(): SessionLink & { written: string[] } {
    const written: string[] = [];
    return {
      written,
      protocolVersion: 5,
      sendQuota: 10,
      writable: true,
      open: true,
      sendPublish(out: OutgoingPublish, qos: number, _retain: boolean, _ids: readonly number[] | undefined, packetId: number) {
        written.push(`${out.message.payload.toString()}@${qos}#${packetId}`);
        return true;
      },
      sendPubrel() {},
      closeForQuota() {},
      pumpLater() {
        setImmediate(() => session?.pump(Date.now()));
      },
      supersede() {},
      takeover() {},
    };
  }
  let session: Session | undefined;

  async function persistentSession(clientId: string): Promise<{ session: Session; link: ReturnType<typeof recordingLink> }> {
    const opened = await bridge.open(clientId, false, 300, undefined, 'u');
    assert.ok('session' in opened, `the session of ${clientId} opened`);
    session = opened.session;
    assert.ok(session.journal, 'a persistent cluster session has the journal');
    test.ctx.broker.subscribe(session, { filter: `j/${clientId}`, qos: 2, noLocal: false, retainAsPublished: false, retainHandling: 0 });
    const link = recordingLink();
    session.resume(link, Date.now());
    return { session, link };
  }

  const publish = (clientId: string, payload: string, qos: 1 | 2): void | Promise<void> => {
    const message: StoredMessage = { topic: `j/${clientId}`, payload: Buffer.from(payload), qos, retain: false, origin: 'pub' };
    return test.ctx.broker.publish(message);
  };
  const storedPayloads = async (clientId: string) => ((await store.load(clientId))?.pending ?? []).map((p) => p.message.payload.toString());

  it('a QoS 1 delivery is in Redis when the publish resolves (the PUBACK waits for it), and leaves Redis when acknowledged', async () => {
    const { session: s, link } = await persistentSession('j1');
    const acked = publish('j1', 'one', 1);
    assert.ok(acked instanceof Promise, 'a delivery to a persistent session gives the publisher something to wait for');
    assert.deepEqual(link.written, ['one@1#1'], 'QoS 1 goes out at once');
    await acked;
    assert.deepEqual(await storedPayloads('j1'), ['one'], 'stored before the publisher is acknowledged');
    assert.equal(s.complete(1, 1), true);
    await waitFor(async () => (await storedPayloads('j1')).length === 0, 5000, 'the PUBACKed message removed from Redis');
  });

  it('a QoS 2 delivery goes out only once Redis has it', async () => {
    const { link } = await persistentSession('j2');
    const acked = publish('j2', 'two', 2);
    assert.deepEqual(link.written, [], 'held while its append is in flight');
    await acked;
    assert.deepEqual(await storedPayloads('j2'), ['two']);
    await waitFor(() => link.written.length === 1, 5000, 'sent once stored');
    assert.deepEqual(link.written, ['two@2#1']);
  });

  it('writes that failed while Redis was away: the publish is refused, the session is saved whole once Redis is back', async () => {
    const { link } = await persistentSession('j3');
    const checkpoints = async () => (await test.ctx.metrics.sessionCheckpointsTotal.get()).values[0]?.value ?? 0;
    const before = await checkpoints();
    await redis.kill();
    await waitFor(() => node.redis.client.status !== 'ready', 5000, 'the node to see Redis gone');
    const acked = publish('j3', 'during', 1);
    assert.ok(acked instanceof Promise);
    await assert.rejects(acked, 'not stored: the publisher is not acknowledged');
    assert.deepEqual(link.written, ['during@1#1'], 'the subscriber still gets it from memory');
    // the refusal can come first (the route table resyncs after a disconnect): the append
    // itself fails once its one retry found no Redis, and leaves the session ahead of Redis
    await waitFor(() => !bridge.journal.clean, 10_000, 'the failed append to mark the session dirty');
    assert.equal(node.membership.owner, true, 'the lease outlives the outage');
    await redis.restart();
    await waitFor(async () => (await checkpoints()) > before, 20_000, 'a checkpoint after Redis came back');
    const stored = await store.load('j3');
    assert.deepEqual(
      stored?.pending.map((p) => p.message.payload.toString()),
      ['during'],
      'the message only memory had is in Redis now',
    );
    assert.equal(stored?.pending[0].packetId, 1, 'with its packet id: a node resuming the session sends it as a duplicate');
  });
});
