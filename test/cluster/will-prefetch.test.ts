// Wills read ahead: while a member's renewal is overdue (not yet dead), one survivor reads and
// decodes the wills its reaping would fire (read-wills-ahead.lua), so the reaping does not
// decode them. What fires is still what orphan-client.lua returns: a record changed since it
// was read ahead is decoded again, a record read ahead but claimed elsewhere is never fired.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { ClientRegistry } from '../../src/cluster/registry.js';
import { ClusterNode } from '../../src/cluster/node.js';
import type { WillRecord } from '../../src/store/types.js';
import { Closer, newKeys, waitFor, will } from './support.js';

describe('wills read ahead for an overdue member', { timeout: 60000 }, () => {
  let redis: TestRedis;
  const closer = new Closer();
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await closer.closeAll();
    await redis.stop();
  });

  it('the reaping fires the records read ahead without decoding them again; a changed one is decoded from the claim', async () => {
    const keys = newKeys('ahead');
    const registry = new ClientRegistry({ redis: closer.redis({ url: redis.url }), keys });
    const dead = 'dead/1';
    const ids = Array.from({ length: 300 }, (_, i) => `p-${i}`);
    await Promise.all(ids.map((id) => registry.claim(id, dead, { cleanStart: true, will: will(id, 0), sessionExpiryS: 0, owner: 'u' })));
    // a delayed will is scheduled by the reaping, not fired: not read ahead; nor a client without a will
    await registry.claim('p-delayed', dead, { cleanStart: true, will: will('p-delayed', 30), sessionExpiryS: 60, owner: 'u' });
    await registry.claim('p-none', dead, { cleanStart: true, sessionExpiryS: 0, owner: 'u' });

    const prefetch = registry.prefetchWills(dead);
    await prefetch.done;
    assert.equal(prefetch.size, 300, 'every will due at once read ahead, the delayed one and the will-less client not');

    // after the read ahead: two clients of the (not yet dead) member connect again with new
    // wills (a new epoch, new records); one connects to another node (its will is claimed there)
    await registry.claim('p-1', dead, { cleanStart: false, will: will('p-1', 0, 'changed'), sessionExpiryS: 0, owner: 'u' });
    await registry.claim('p-2', dead, { cleanStart: false, will: will('p-2', 0, 'changed'), sessionExpiryS: 0, owner: 'u' });
    await registry.claim('p-3', 'alive/1', { cleanStart: false, sessionExpiryS: 0, owner: 'u' });

    const fired: WillRecord[] = [];
    const report = await registry.orphanClients(dead, (w) => void fired.push(w), 'reaper/1', prefetch);
    const byId = new Map(fired.map((w) => [w.clientId, w]));
    assert.equal(fired.length, 299, 'each will due at once fired once, not the one claimed elsewhere');
    assert.equal(byId.size, 299);
    assert.equal(byId.has('p-3'), false, 'a record read ahead is never fired unless the reaping claimed it');
    assert.equal(report.prefetched, 297, 'the unchanged records were not decoded again');
    assert.equal(prefetch.changed, 2);
    for (const id of ['p-1', 'p-2']) {
      assert.equal(byId.get(id)!.message.payload.toString(), 'changed', `${id}: the claimed record fires, not the one read ahead`);
      assert.equal(byId.get(id)!.epoch, 2);
    }
    assert.equal(byId.get('p-0')!.message.payload.toString(), 'down');
    assert.equal(byId.get('p-0')!.epoch, 1, 'the epoch is the claim reply\'s');
    assert.deepEqual(byId.get('p-0')!.identity, { username: 'u', clientId: 'p-0', roles: ['device'], authenticatedAtMs: 1 });
    assert.equal(prefetch.size, 1, 'what was used or superseded is let go; the moved client\'s record is left unused');
  });

  it('reads at most its limit; the rest is decoded in the reaping as before', async () => {
    const keys = newKeys('ahead');
    const registry = new ClientRegistry({ redis: closer.redis({ url: redis.url }), keys });
    const dead = 'dead/2';
    const ids = Array.from({ length: 120 }, (_, i) => `q-${i}`);
    await Promise.all(ids.map((id) => registry.claim(id, dead, { cleanStart: true, will: will(id, 0), sessionExpiryS: 0, owner: 'u' })));
    const prefetch = registry.prefetchWills(dead, 50);
    await prefetch.done;
    assert.equal(prefetch.size, 50);
    const fired: string[] = [];
    const report = await registry.orphanClients(dead, (w) => void fired.push(w.clientId), 'reaper/1', prefetch);
    assert.deepEqual(fired.sort(), [...ids].sort());
    assert.equal(report.prefetched, 50);
  });

  it('a survivor reads the wills of a node that stopped renewing before it reaps it, and its reaping uses them', async () => {
    const prefix = randomPrefix('ahead');
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: 'info' }, new Writable({ write: (chunk, _e, done) => (lines.push(JSON.parse(String(chunk)) as Record<string, unknown>), done()) }));
    const nodeOf = (nodeId: string, fired: WillRecord[]) =>
      closer.add(
        new ClusterNode({
          config: { redisUrl: redis.url, redisClusterNodes: [], redisPrefix: prefix, heartbeatMs: 100, nodeTimeoutMs: 1000, nodeId },
          hooks: { fireWill: (w) => void fired.push(w), onBusMessage: () => undefined },
          log: nodeId === 'b' ? log : undefined,
        }),
        (n) => n.stop({ leave: false }),
      );
    const firedB: WillRecord[] = [];
    const a = nodeOf('a', []);
    const b = nodeOf('b', firedB);
    await a.start();
    await b.start();
    const ids = Array.from({ length: 200 }, (_, i) => `n-${i}`);
    await Promise.all(ids.map((id) => a.registry.claim(id, a.member, { cleanStart: true, will: will(id, 0), sessionExpiryS: 0, owner: 'u' })));
    // b reaps only once it has held its lease for a node timeout
    await new Promise((r) => setTimeout(r, 1100));
    await a.stop({ leave: false }); // a crash: no goodbye, the renewals just stop
    const expiry = Number(await redis.client().zscore(b.keys.nodeLeases, a.member));
    await waitFor(() => firedB.length === 200, 20000, 'every will fired by the survivor');
    await waitFor(() => lines.some((l) => l.msg === 'dead node reaped'), 5000, 'reaped');
    const msgs = lines.map((l) => l.msg);
    const ahead = msgs.indexOf('reading the wills of an overdue node ahead');
    assert.ok(ahead >= 0, 'the survivor read ahead');
    assert.ok(ahead < msgs.indexOf('reaping dead node'), 'before the node was declared dead');
    const reaping = lines.find((l) => l.msg === 'reaping dead node')!;
    // (a renewal a's stop left in flight may have moved it on once more)
    assert.ok(typeof reaping.leaseExpiredAtMs === 'number' && reaping.leaseExpiredAtMs >= expiry, `the reaping says when the lease it found lapsed expired: ${String(reaping.leaseExpiredAtMs)} vs ${expiry}`);
    assert.ok(Number(reaping.lapsedForMs) >= 0, `and how long before it was noticed: ${String(reaping.lapsedForMs)} ms`);
    const reaped = lines.find((l) => l.msg === 'dead node reaped')!;
    assert.equal(reaped.fired, 200);
    assert.ok(Number(reaped.prefetched) > 0, `the reaping used what was read ahead (${String(reaped.prefetched)})`);
    assert.deepEqual(firedB.map((w) => w.clientId).sort(), [...ids].sort());
  });
});
