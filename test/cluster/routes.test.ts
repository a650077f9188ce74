// Route tables of several nodes stay in sync through Redis; shared groups are served by one
// member per message, round robin across nodes.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { RouteTable } from '../../src/cluster/routes.js';
import { parseShared, sharedName } from '../../src/protocol/topics.js';
import { Closer, newKeys, waitFor } from './support.js';

describe('route table', { timeout: 60000 }, () => {
  let redis: TestRedis;
  const closer = new Closer();
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await closer.closeAll();
    await redis.stop();
  });

  async function table(keys: ReturnType<typeof newKeys>, member: string, live: string[] = []): Promise<RouteTable> {
    const t = new RouteTable({ redis: closer.redis({ url: redis.url }), keys, member });
    await t.start(live);
    closer.add(t, (x) => x.stop());
    return t;
  }
  const sorted = (s: Set<string>) => [...s].sort();

  it('parses shared filters', () => {
    assert.deepEqual(parseShared(sharedName({ group: 'g', filter: 'a/+/b' })), { group: 'g', filter: 'a/+/b' });
    assert.deepEqual(parseShared('a/#'), { filter: 'a/#' });
  });

  it('publishes a filter on 0→1 and withdraws it on 1→0; other nodes see it', async () => {
    const keys = newKeys();
    const a = await table(keys, 'A/1');
    const b = await table(keys, 'B/1', ['A/1']);
    await a.addLocal({ filter: 'sensors/+/temp' });
    await a.addLocal({ filter: 'sensors/+/temp' });
    await waitFor(() => b.nodesFor('sensors/x/temp').has('A/1'), 3000, 'route at B');
    assert.deepEqual(sorted(a.nodesFor('sensors/x/temp')), [], 'a node does not forward to itself');
    assert.deepEqual(sorted(b.nodesFor('sensors/x/hum')), []);
    assert.deepEqual(sorted(b.nodesFor('$SYS/x/temp')), []);
    await a.removeLocal({ filter: 'sensors/+/temp' });
    assert.equal((await redis.client().smembers(keys.nodeRoutes('A/1'))).length, 1, 'still one local subscriber');
    await a.removeLocal({ filter: 'sensors/+/temp' });
    await waitFor(() => !b.nodesFor('sensors/x/temp').has('A/1'), 3000, 'route withdrawn at B');
  });

  it('a node started later loads existing routes; overlapping filters give one member once', async () => {
    const keys = newKeys();
    const a = await table(keys, 'A/1');
    const b = await table(keys, 'B/1', ['A/1']);
    await a.addLocal({ filter: '#' });
    await a.addLocal({ filter: 'x/y' });
    await b.addLocal({ filter: 'x/+' });
    const c = await table(keys, 'C/1', ['A/1', 'B/1']);
    assert.deepEqual(sorted(c.nodesFor('x/y')), ['A/1', 'B/1']);
    assert.deepEqual(sorted(c.nodesFor('z')), ['A/1']);
    await waitFor(() => sorted(a.nodesFor('x/y')).join() === 'B/1', 3000, 'A sees B');
  });

  it('picks one member per shared group per message, round robin across nodes', async () => {
    const keys = newKeys();
    const a = await table(keys, 'A/1');
    const b = await table(keys, 'B/1', ['A/1']);
    const c = await table(keys, 'C/1', ['A/1', 'B/1']);
    await a.addLocal({ filter: 'jobs/#', group: 'workers' });
    await b.addLocal({ filter: 'jobs/#', group: 'workers' });
    await b.addLocal({ filter: 'jobs/#', group: 'audit' });
    await waitFor(() => c.knownMembers().length === 2, 3000, 'C sees both');
    await waitFor(() => {
      const r = c.route('jobs/1');
      return r.shared.length === 2;
    }, 3000, 'groups at C');
    const picks = new Map<string, number>();
    for (let i = 0; i < 10; i++) {
      const r = c.route('jobs/1');
      assert.equal(r.members.size, 0, 'shared subscriptions are not plain routes');
      const workers = r.shared.filter((s) => s.group === 'workers');
      assert.equal(workers.length, 1);
      picks.set(workers[0].member, (picks.get(workers[0].member) ?? 0) + 1);
      assert.deepEqual(r.shared.filter((s) => s.group === 'audit').map((s) => s.member), ['B/1']);
    }
    assert.deepEqual([...picks.entries()].sort(), [['A/1', 5], ['B/1', 5]]);
    // A's own table includes A itself as a candidate
    await waitFor(() => a.route('jobs/1').shared.length === 2, 3000, 'A sees B groups');
    const selfPicks = new Set(Array.from({ length: 4 }, () => a.route('jobs/1').shared.find((s) => s.group === 'workers')!.member));
    assert.deepEqual([...selfPicks].sort(), ['A/1', 'B/1']);
  });

  it('drops a dead member\'s routes everywhere when the reaper purges it', async () => {
    const keys = newKeys();
    const a = await table(keys, 'A/1');
    const b = await table(keys, 'B/1', ['A/1']);
    const reaper = await table(keys, 'R/1', ['A/1', 'B/1']);
    await a.addLocal({ filter: 't' });
    await waitFor(() => b.nodesFor('t').has('A/1') && reaper.nodesFor('t').has('A/1'), 3000, 'routes');
    await reaper.purgeMember('A/1');
    assert.equal(reaper.nodesFor('t').size, 0);
    await waitFor(() => b.nodesFor('t').size === 0, 3000, 'purge seen at B');
    assert.deepEqual(await redis.client().smembers(keys.nodeRoutes('A/1')), []);
  });

  it('resyncs after its subscription connection dropped', async () => {
    const keys = newKeys();
    const a = await table(keys, 'A/1');
    const b = await table(keys, 'B/1', ['A/1']);
    await a.addLocal({ filter: 'p/1' });
    await waitFor(() => b.nodesFor('p/1').has('A/1'), 3000, 'first');
    await redis.client().client('KILL', 'TYPE', 'pubsub');
    await a.removeLocal({ filter: 'p/1' });
    await a.addLocal({ filter: 'p/2' });
    await waitFor(() => !b.nodesFor('p/1').has('A/1') && b.nodesFor('p/2').has('A/1'), 5000, 'resynced');
  });

  it('republishes local filters under a new member after a rejoin', async () => {
    const keys = newKeys();
    const a = await table(keys, 'A/1');
    const b = await table(keys, 'B/1', ['A/1']);
    await a.addLocal({ filter: 'r/#' });
    await waitFor(() => b.nodesFor('r/1').has('A/1'), 3000, 'first member');
    await a.rejoined('A/2');
    await b.purgeMember('A/1');
    await waitFor(() => sorted(b.nodesFor('r/1')).join() === 'A/2', 3000, 'new member');
  });
});
