import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { Membership } from '../../src/cluster/membership.js';
import { Closer, newKeys, sleep, waitFor } from './support.js';

const HEARTBEAT = 100;
const TIMEOUT = 500;

describe('membership leases', { timeout: 60000 }, () => {
  let redis: TestRedis;
  const closer = new Closer();
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await closer.closeAll();
    await redis.stop();
  });

  function node(keys: ReturnType<typeof newKeys>, nodeId: string, extra: { autoRenew?: boolean } = {}): Membership {
    const m = new Membership({ redis: closer.redis({ url: redis.url }), keys, nodeId, heartbeatMs: HEARTBEAT, nodeTimeoutMs: TIMEOUT, ...extra });
    closer.add(m, (x) => x.stop({ leave: false }));
    return m;
  }

  it('lists live nodes and detects a lapsed one within nodeTimeoutMs', async () => {
    const keys = newKeys();
    const a = node(keys, 'a', { autoRenew: false });
    const b = node(keys, 'b');
    const beforeJoin = Date.now();
    await a.start();
    const afterJoin = Date.now();
    await b.start();
    assert.equal(a.owner, true);
    assert.deepEqual((await b.liveNodes()).sort(), [a.member, b.member].sort());
    let seenAt = 0;
    b.on('lapsed', (members) => {
      if (!seenAt && members.includes(a.member)) seenAt = Date.now();
    });
    await waitFor(() => seenAt > 0, 3000, 'lapse detected');
    // a's only lease was written between beforeJoin and afterJoin
    assert.ok(seenAt - beforeJoin >= TIMEOUT - 5, `detected too early (${seenAt - beforeJoin} ms)`);
    assert.ok(seenAt - afterJoin <= TIMEOUT + HEARTBEAT + 300, `detected late (${seenAt - afterJoin} ms)`);
    assert.deepEqual(await b.liveNodes(), [b.member]);
    assert.deepEqual(await b.lapsedNodes(), [a.member]);
    // a, not renewing, fenced itself before anyone could see it dead
    assert.equal(a.owner, false);
  });

  it('a member whose renewal is late is reported overdue before its lease lapses, with those renewing', async () => {
    const keys = newKeys();
    const dead = node(keys, 'dead', { autoRenew: false });
    const survivor = node(keys, 'survivor');
    const joined = Date.now();
    await dead.start();
    await survivor.start();
    let overdueAt = 0;
    let renewing: string[] = [];
    let lapsedAt = 0;
    survivor.on('overdue', (members, live) => {
      if (!overdueAt && members.includes(dead.member)) {
        overdueAt = Date.now();
        renewing = live;
      }
    });
    survivor.on('lapsed', (members) => {
      if (!lapsedAt && members.includes(dead.member)) lapsedAt = Date.now();
    });
    await waitFor(() => lapsedAt > 0, 5000, 'lapse detected');
    assert.ok(overdueAt > 0, 'reported overdue');
    assert.ok(overdueAt <= lapsedAt, 'before it lapsed');
    // its only lease was written after `joined`: overdue means renewed over 1.5 heartbeats ago
    assert.ok(overdueAt - joined >= survivor.overdueAfterMs - 5, `overdue too early (${overdueAt - joined} ms)`);
    assert.deepEqual(renewing, [survivor.member], 'the members renewing in time, not the overdue one');
  });

  it('a survivor looks again when the earliest lease it saw expires, not at its next heartbeat', async () => {
    const keys = newKeys();
    const dead = node(keys, 'dead', { autoRenew: false });
    // no heartbeat timer: the survivor heartbeats once, by hand, while the other lease runs;
    // only the expiry timer armed by that heartbeat can notice the lapse
    const survivor = node(keys, 'survivor', { autoRenew: false });
    await dead.start();
    await survivor.start();
    const rc = redis.client();
    const lapses: { members: string[]; redisNowMs: number }[] = [];
    survivor.on('lapsed', (members) => {
      void rc.time().then(([s, us]) => lapses.push({ members, redisNowMs: Number(s) * 1000 + Math.floor(Number(us) / 1000) }));
    });
    const expiry = Number(await rc.zscore(keys.nodeLeases, dead.member));
    await survivor.heartbeat();
    assert.equal(lapses.length, 0, 'nothing lapsed at the heartbeat');
    await waitFor(() => lapses.length > 0, 10000, 'the lapse noticed without another heartbeat');
    assert.ok(lapses[0]!.members.includes(dead.member));
    assert.ok(lapses[0]!.redisNowMs >= expiry, 'never before the lease expired (Redis clock)');
    assert.equal(await survivor.reap(dead.member), true);
  });

  it('lets exactly one of three concurrent reapers win', async () => {
    const keys = newKeys();
    const dead = node(keys, 'dead', { autoRenew: false });
    await dead.start();
    const reapers = [node(keys, 'r1'), node(keys, 'r2'), node(keys, 'r3')];
    await Promise.all(reapers.map((r) => r.start()));
    assert.deepEqual(await Promise.all(reapers.map((r) => r.reap(dead.member))), [false, false, false], 'a live lease cannot be reaped');
    await sleep(TIMEOUT + 50);
    for (let round = 0; round < 5; round++) {
      const victim = node(keys, `v${round}`, { autoRenew: false });
      await victim.start();
      await sleep(TIMEOUT + 20);
      const wins = await Promise.all(reapers.flatMap((r) => [r.reap(victim.member), r.reap(victim.member)]));
      assert.equal(wins.filter(Boolean).length, 1, `round ${round}: ${wins}`);
    }
    const wins = await Promise.all(reapers.map((r) => r.reap(dead.member)));
    assert.equal(wins.filter(Boolean).length, 1);
  });

  it('gives up ownership before its lease can expire when Redis does not answer, then rejoins', async () => {
    const keys = newKeys();
    const a = node(keys, 'a');
    await a.start();
    const first = a.member;
    const events: { owner: boolean; reason: string; at: number }[] = [];
    a.on('owner', (owner, reason) => events.push({ owner, reason, at: Date.now() }));
    const rejoined = new Promise<string>((resolve) => a.once('rejoined', (m) => resolve(m)));
    const observer = closer.redis({ url: redis.url });
    await sleep(HEARTBEAT);
    await redis.pause(TIMEOUT + 400);
    const newMember = await rejoined;
    assert.notEqual(newMember, first);
    const lost = events.find((e) => !e.owner);
    assert.ok(lost, 'owner=false reported');
    assert.equal(lost.reason, 'lease_unconfirmed');
    // the old member's last lease is still there (lapsed, nobody reaped it): a fenced itself
    // about one heartbeat before it expired
    const lastExpiry = Number(await observer.client.zscore(keys.nodeLeases, first));
    assert.ok(lastExpiry > 0);
    assert.ok(lost.at < lastExpiry - HEARTBEAT / 2, `fenced at ${lost.at}, lease expired at ${lastExpiry}`);
    assert.ok(events.at(-1)!.owner, 'owner again after rejoining');
    assert.equal(a.owner, true);
    assert.ok((await a.liveNodes()).includes(newMember));
  });

  it('stops owning and rejoins as a new member when its lease was reaped', async () => {
    const keys = newKeys();
    const a = node(keys, 'a', { autoRenew: false });
    const b = node(keys, 'b');
    await a.start();
    await b.start();
    const old = a.member;
    await sleep(TIMEOUT + 50);
    assert.equal(await b.reap(old), true);
    const reasons: string[] = [];
    a.on('owner', (owner, reason) => reasons.push(`${owner}:${reason}`));
    const rejoined = new Promise<[string, string]>((resolve) => a.once('rejoined', (m, prev) => resolve([m, prev])));
    await a.heartbeat();
    const [m, prev] = await rejoined;
    assert.equal(prev, old);
    assert.notEqual(m, old);
    assert.equal(a.member, m);
    assert.ok(reasons.includes('true:joined'), reasons.join());
    assert.equal(a.owner, true);
  });

  it('leaving marks the lease expired so it is reaped at once', async () => {
    const keys = newKeys();
    const a = node(keys, 'a');
    const b = node(keys, 'b');
    await a.start();
    await b.start();
    await a.stop();
    assert.equal(a.owner, false);
    assert.deepEqual(await b.lapsedNodes(), [a.member]);
    assert.equal(await b.reap(a.member), true);
  });
});
