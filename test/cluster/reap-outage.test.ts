// Reaping across a Redis outage: a node that gave up its lease (Redis away) must not reap
// anyone. Every lease lapses in an outage longer than the node timeout; a survey that lists
// them while this node is rejoining made it reap the others (and its own previous member)
// before they could rejoin and keep their sessions, so two nodes held each session: the
// audit (cluster-e2e/audit) saw QoS 2 twice and acknowledged messages lost.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { ClusterNode } from '../../src/cluster/node.js';
import { waitFor } from './support.js';

describe('reaping across a Redis outage', { timeout: 60000 }, () => {
  let redis: TestRedis;
  const nodes: ClusterNode[] = [];
  before(async () => {
    // the leases must outlive the restart
    redis = await startRedis({ appendonly: true, appendfsync: 'always' });
  });
  after(async () => {
    for (const n of nodes) await n.stop({ leave: false }).catch(() => undefined);
    await redis.stop();
  });

  function node(prefix: string, nodeId: string): ClusterNode {
    const n = new ClusterNode({
      config: { redisUrl: redis.url, redisClusterNodes: [], redisPrefix: prefix, heartbeatMs: 100, nodeTimeoutMs: 500, nodeId },
      hooks: { fireWill: () => undefined, onBusMessage: () => undefined },
      willSweepMs: 100,
    });
    nodes.push(n);
    return n;
  }

  it('a node without its lease reaps nobody; back, it reaps a dead member after one node timeout', async () => {
    const prefix = randomPrefix('reapout');
    const a = node(prefix, 'a');
    const b = node(prefix, 'b');
    await a.start();
    await b.start();
    const dead = a.member;
    const claims: { member: string; owner: boolean }[] = [];
    const reap = b.membership.reap.bind(b.membership);
    b.membership.reap = (member: string) => {
      claims.push({ member, owner: b.membership.owner });
      return reap(member);
    };
    // a dies with Redis: its lease is lapsed when Redis is back, and so is b's
    await a.stop({ leave: false });
    await redis.kill();
    await waitFor(() => !b.membership.owner, 10000, 'b gives up its lease without Redis');
    // what a survey answered now reports (every lease lapsed)
    b.membership.emit('lapsed', [dead]);
    await redis.restart();
    await waitFor(() => b.membership.owner, 15000, 'b owns its clients again (rejoined)');
    await waitFor(async () => !(await b.membership.lapsedNodes()).includes(dead), 15000, 'the dead member reaped');
    assert.deepEqual(claims.filter((c) => !c.owner), [], 'no reap claimed without the lease');
    assert.ok(claims.some((c) => c.member === dead && c.owner), 'the dead member reaped by b once it owned its lease again');
  });
});
