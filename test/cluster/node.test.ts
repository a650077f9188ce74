// Two cluster nodes on one Redis: when one dies, the other reaps it, fires its clients'
// wills once and forgets its routes.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { ClusterNode } from '../../src/cluster/node.js';
import type { WillRecord } from '../../src/store/types.js';
import type { BusEnvelope } from '../../src/cluster/bus-codec.js';
import { waitFor, will, message } from './support.js';

describe('cluster node', { timeout: 60000 }, () => {
  let redis: TestRedis;
  const nodes: ClusterNode[] = [];
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    for (const n of nodes) await n.stop({ leave: false }).catch(() => undefined);
    await redis.stop();
  });

  function node(prefix: string, nodeId: string, fired: WillRecord[], got: BusEnvelope[], autoRenew = true): ClusterNode {
    const n = new ClusterNode({
      config: { redisUrl: redis.url, redisClusterNodes: [], redisPrefix: prefix, heartbeatMs: 100, nodeTimeoutMs: 500, nodeId },
      hooks: { fireWill: (w) => void fired.push(w), onBusMessage: (e) => void got.push(e) },
      autoRenew,
      willSweepMs: 100,
    });
    nodes.push(n);
    return n;
  }

  it('a survivor reaps a dead node: wills fire once (delay 0 now, delayed later), routes go', async () => {
    const prefix = randomPrefix('node');
    const firedA: WillRecord[] = [];
    const firedB: WillRecord[] = [];
    const gotB: BusEnvelope[] = [];
    const a = node(prefix, 'a', firedA, []);
    const b = node(prefix, 'b', firedB, gotB);
    await a.start();
    await b.start();
    await a.registry.claim('now', a.member, { cleanStart: true, will: will('now', 0), sessionExpiryS: 0, owner: 'u' });
    await a.registry.claim('later', a.member, { cleanStart: true, will: will('later', 1), sessionExpiryS: 60, owner: 'u' });
    await a.routes.addLocal({ filter: 'x/#' });
    await waitFor(() => b.routes.nodesFor('x/1').has(a.member), 3000, 'route');
    assert.equal(await a.bus.forward(b.member, message('x/1', 'hi'), { normal: true }), true);
    await waitFor(() => gotB.length === 1, 3000, 'bus');
    await a.stop({ leave: false }); // a crash: no goodbye, the lease just lapses
    const t0 = Date.now();
    await waitFor(() => firedB.some((w) => w.clientId === 'now'), 3000, 'delay-0 will fired by survivor');
    // nodeTimeoutMs + one heartbeat, plus slack for a loaded CI machine
    assert.ok(Date.now() - t0 < 500 + 100 + 900, `took ${Date.now() - t0} ms`);
    await waitFor(() => b.routes.nodesFor('x/1').size === 0, 3000, 'dead node routes dropped');
    await waitFor(() => firedB.some((w) => w.clientId === 'later'), 3000, 'delayed will fired');
    assert.deepEqual(firedB.map((w) => w.clientId).sort(), ['later', 'now']);
    assert.deepEqual(firedA, []);
    assert.deepEqual(await b.membership.liveNodes(), [b.member]);
  });
});
