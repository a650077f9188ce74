// The console's cluster-wide fleet index against a real Redis: every claimed client id is
// paged in byte order from a cursor, narrowed by prefix and state; an ended connection, a
// scheduled will and a will decision show in the entry; the page reads stay per-client keys.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { ClientRegistry } from '../../src/cluster/registry.js';
import { ClusterFleet } from '../../src/cluster/fleet-index.js';
import { decisionOf } from '../../src/http/fleet.js';
import type { WillRecord } from '../../src/store/types.js';
import type { Verdict } from '../../src/auth/types.js';
import { Closer, newKeys, will } from './support.js';

describe('cluster fleet index', { timeout: 60000 }, () => {
  const closer = new Closer();
  let redis: TestRedis;
  after(async () => {
    await closer.closeAll();
    await redis?.stop();
  });

  async function setup() {
    redis ??= await startRedis();
    const keys = newKeys('fleet');
    const conn = closer.redis({ url: redis.url });
    const registry = new ClientRegistry({ redis: conn, keys });
    const describe = (record: WillRecord, verdict: Verdict) =>
      decisionOf(record, verdict, { node: 'node-b', lease: 'node-b/2', nowMs: 1_700_000_000_000, rule: verdict.allowed ? 'roles.device.publish: status/#' : 'deny.publish: status/x', explanation: '', policyGeneration: 3, willAuthz: 'connect+fire' });
    const fleet = new ClusterFleet({ redis: conn, keys, broker: { sessions: new Map() }, member: () => 'node-a/1', describe });
    const connect = async (clientId: string, member: string, w?: WillRecord) => {
      const { epoch } = await registry.claim(clientId, member, { cleanStart: true, will: w, sessionExpiryS: 0, owner: 'u' });
      fleet.connected({ clientId, epoch, username: `user-${clientId}`, roles: ['device'], protocolVersion: 5, connectedAtMs: 1_700_000_000_000 });
      return epoch;
    };
    return { keys, conn, registry, fleet, connect };
  }

  const settle = () => new Promise((r) => setTimeout(r, 50));

  it('pages every client id in order from a cursor, within a prefix', async () => {
    const { fleet, connect } = await setup();
    const ids = ['srv-10', 'srv-02', 'srv-01', 'sensor-1', 'srv-03', 'tv', 'srv-04', 'srw'];
    for (const id of ids) await connect(id, 'node-a/1');
    await settle();
    const first = await fleet.page({ prefix: 'srv-', limit: 2 });
    assert.deepEqual(first.clients.map((c) => c.clientId), ['srv-01', 'srv-02']);
    assert.equal(first.next, 'srv-02');
    const second = await fleet.page({ prefix: 'srv-', limit: 2, after: first.next! });
    assert.deepEqual(second.clients.map((c) => c.clientId), ['srv-03', 'srv-04']);
    const last = await fleet.page({ prefix: 'srv-', limit: 2, after: second.next! });
    assert.deepEqual(last.clients.map((c) => c.clientId), ['srv-10']);
    assert.equal(last.next, null);
    const all = await fleet.page({ prefix: '', limit: 100 });
    assert.deepEqual(all.clients.map((c) => c.clientId), [...ids].sort());
    assert.equal(all.next, null);
    const c = all.clients.find((x) => x.clientId === 'srv-01')!;
    assert.deepEqual([c.state, c.node, c.username, c.owner, c.roles, c.protocolVersion, c.connectedSince], ['connected', 'node-a', 'user-srv-01', 'u', ['device'], 5, new Date(1_700_000_000_000).toISOString()]);
  });

  it('shows a normal disconnect offline, a lost connection down with its pending will, a decided will with its rule and node', async () => {
    const { fleet, connect, registry, keys, conn } = await setup();
    const eNormal = await connect('c-normal', 'node-a/1');
    const eLost = await connect('c-lost', 'node-a/1', will('c-lost', 60));
    const wDenied = will('c-denied', 0);
    const eDenied = await connect('c-denied', 'node-a/1', wDenied);
    await connect('c-up', 'node-a/1', will('c-up', 0));
    await settle();
    await registry.normalDisconnect('c-normal', eNormal);
    fleet.gone('c-normal', eNormal, true, 1_700_000_001_000);
    const out = await registry.abnormalDisconnect('c-lost', eLost, 120);
    assert.equal(out.kind, 'scheduled');
    fleet.gone('c-lost', eLost, false, 1_700_000_002_000);
    // c-denied: its node died; the reaper decided its will
    const orphan = await registry.orphanClients('node-a/1', () => undefined, 'node-b/2').catch(() => undefined);
    assert.ok(orphan);
    fleet.willDecided({ ...wDenied, epoch: eDenied }, { allowed: false, reason: 'deny_rule' });
    await settle();
    const byId = new Map((await fleet.page({ prefix: 'c-', limit: 10 })).clients.map((c) => [c.clientId, c]));
    assert.equal(byId.get('c-normal')!.state, 'offline');
    assert.equal(byId.get('c-normal')!.disconnectedSince, new Date(1_700_000_001_000).toISOString());
    const lost = byId.get('c-lost')!;
    assert.equal(lost.state, 'down');
    assert.equal(lost.will?.state, 'pending');
    assert.equal(lost.node, 'node-b', 'owned (offline) by the reaper now');
    const denied = byId.get('c-denied')!;
    assert.equal(denied.state, 'down');
    assert.deepEqual([denied.will?.state, denied.will?.node, denied.will?.rule], ['denied', 'node-b', 'deny.publish: status/x']);
    // c-up was connected to the reaped node too: its delay-0 will was taken by the orphan pass
    assert.equal(byId.get('c-up')!.state, 'down');

    const onlyDown = await fleet.page({ prefix: 'c-', state: 'down', limit: 10 });
    assert.deepEqual(onlyDown.clients.map((c) => c.clientId), ['c-denied', 'c-lost', 'c-up']);
    const decisions = await fleet.decisions(10);
    assert.equal(decisions[0].clientId, 'c-denied');
    assert.equal((await fleet.lastDecision('c-denied'))?.outcome, 'denied');
    const pending = await fleet.pendingWills(10);
    assert.deepEqual(pending.map((p) => [p.clientId, p.node]), [['c-lost', 'node-b']]);
    const stored = await fleet.storedWill('c-lost');
    assert.equal(stored?.record.message.topic, 'status/c-lost');
    assert.equal(stored?.owner, 'node-b/2');
    // a late "ended" of an older incarnation does not mark a newer connection ended
    const eAgain = await connect('c-normal', 'node-a/1');
    await settle();
    fleet.gone('c-normal', eNormal, true, 1_700_000_009_000);
    await settle();
    assert.equal((await fleet.entry('c-normal'))?.state, 'connected');
    assert.ok(eAgain > eNormal);
    assert.equal(await conn.client.zcard(keys.fleetIds), 4);
  });

  it('a state filter that skips most ids still pages with a cursor', async () => {
    const { fleet, connect, registry } = await setup();
    for (let i = 0; i < 30; i++) {
      const id = `d-${String(i).padStart(2, '0')}`;
      const e = await connect(id, 'node-a/1');
      if (i % 10 !== 0) {
        await registry.normalDisconnect(id, e);
        fleet.gone(id, e, true, 1);
      }
    }
    await settle();
    const seen: string[] = [];
    let after: string | undefined;
    for (let pages = 0; pages < 10; pages++) {
      const p = await fleet.page({ prefix: 'd-', state: 'connected', limit: 2, after });
      seen.push(...p.clients.map((c) => c.clientId));
      if (!p.next) break;
      after = p.next;
    }
    assert.deepEqual(seen, ['d-00', 'd-10', 'd-20']);
  });
});
