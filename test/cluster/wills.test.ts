// Client registry and wills against a real Redis: exactly one publisher per will, whatever
// races (reconnects, concurrent sweeps, reapers). Also against a 3-master Redis Cluster.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, startRedisCluster, type TestRedis, type TestRedisCluster } from '../helpers/redis.js';
import { ClientRegistry } from '../../src/cluster/registry.js';
import type { RedisTarget } from '../../src/redis/connection.js';
import { StaleEpochError } from '../../src/store/errors.js';
import type { WillRecord } from '../../src/store/types.js';
import { Closer, newKeys, sleep, will } from './support.js';

function suite(name: string, target: () => RedisTarget) {
  describe(`client registry and wills (${name})`, { timeout: 60000 }, () => {
    const closer = new Closer();
    after(() => closer.closeAll());

    /** Several registries, each on its own connection: concurrent callers from different nodes. */
    function registries(n: number, keys = newKeys()) {
      return Array.from({ length: n }, () => new ClientRegistry({ redis: closer.redis(target()), keys }));
    }

    it('claims with increasing epochs and reports the previous owner', async () => {
      const [r] = registries(1);
      const a = await r.claim('c1', 'nodeA/1', { cleanStart: true, sessionExpiryS: 0, owner: 'u' });
      assert.deepEqual([a.epoch, a.previousOwner, a.previousOnline, a.previousWill], [1, '', false, 'none']);
      const b = await r.claim('c1', 'nodeB/1', { cleanStart: false, sessionExpiryS: 0, owner: 'u' });
      assert.deepEqual([b.epoch, b.previousOwner, b.previousOnline], [2, 'nodeA/1', true]);
      assert.deepEqual(await r.owner('c1'), { node: 'nodeB/1', epoch: 2, online: true });
    });

    it('fires a delay-0 will once on abnormal disconnect, with the record intact', async () => {
      const [r] = registries(1);
      const w = will('c2', 0);
      w.message.payload = Buffer.from([0, 1, 2, 255, 10, 13]);
      const { epoch } = await r.claim('c2', 'n/1', { cleanStart: true, will: w, sessionExpiryS: 0, owner: 'u' });
      const out = await r.abnormalDisconnect('c2', epoch, 0);
      assert.equal(out.kind, 'fire');
      const fired = (out as { will: WillRecord }).will;
      assert.equal(fired.epoch, epoch);
      assert.deepEqual(fired.message.payload, w.message.payload);
      assert.deepEqual(fired.identity, w.identity);
      assert.deepEqual(await r.abnormalDisconnect('c2', epoch, 0), { kind: 'none' });
    });

    it('refuses an older incarnation (StaleEpochError) and a normal disconnect drops the will', async () => {
      const [r] = registries(1);
      const first = await r.claim('c3', 'n/1', { cleanStart: true, will: will('c3', 0), sessionExpiryS: 0, owner: 'u' });
      const second = await r.claim('c3', 'n/2', { cleanStart: false, will: will('c3', 5), sessionExpiryS: 60, owner: 'u' });
      assert.equal(second.previousWill, 'fire', 'a takeover publishes a delay-0 will [MQTT-3.1.4-3]');
      assert.equal(second.willToFire?.epoch, first.epoch);
      await assert.rejects(r.abnormalDisconnect('c3', first.epoch, 0), StaleEpochError);
      await assert.rejects(r.normalDisconnect('c3', first.epoch), StaleEpochError);
      assert.equal(await r.normalDisconnect('c3', second.epoch), true);
      assert.deepEqual(await r.abnormalDisconnect('c3', second.epoch, 60), { kind: 'none' });
    });

    it('race: many concurrent abnormal-disconnect calls and a reconnect, exactly one fires', async () => {
      for (let round = 0; round < 10; round++) {
        const rs = registries(4);
        const id = `race-${round}`;
        const { epoch } = await rs[0].claim(id, 'n/1', { cleanStart: true, will: will(id, 0), sessionExpiryS: 0, owner: 'u' });
        const results = await Promise.allSettled([
          ...rs.map((r) => r.abnormalDisconnect(id, epoch, 0)),
          rs[1].claim(id, 'n/2', { cleanStart: false, sessionExpiryS: 0, owner: 'u' }),
          rs[2].claim(id, 'n/3', { cleanStart: true, sessionExpiryS: 0, owner: 'u' }),
        ]);
        let fired = 0;
        for (const res of results) {
          if (res.status === 'rejected') {
            assert.ok(res.reason instanceof StaleEpochError, String(res.reason));
            continue;
          }
          const v = res.value as { kind?: string; willToFire?: WillRecord };
          if (v.kind === 'fire' || v.willToFire) fired++;
        }
        assert.equal(fired, 1, `round ${round}`);
      }
    });

    it('schedules a delayed will; concurrent sweepers fire it exactly once when due', async () => {
      const keys = newKeys();
      const rs = registries(3, keys);
      const ids = ['d1', 'd2', 'd3', 'd4'];
      for (const id of ids) {
        const { epoch } = await rs[0].claim(id, 'n/1', { cleanStart: true, will: will(id, 1), sessionExpiryS: 3600, owner: 'u' });
        const out = await rs[0].abnormalDisconnect(id, epoch, 3600);
        assert.equal(out.kind, 'scheduled');
      }
      const fired: string[] = [];
      const fire = (w: WillRecord) => void fired.push(w.clientId);
      // not due yet (even if a sweeper's clock runs ahead, the script uses Redis time)
      await Promise.all(rs.map((r) => r.sweepDueWills(Date.now() + 5000, fire)));
      assert.deepEqual(fired, []);
      await sleep(1100);
      const counts = await Promise.all(rs.flatMap((r) => [r.sweepDueWills(Date.now(), fire), r.sweepDueWills(Date.now(), fire)]));
      assert.equal(counts.reduce((a, b) => a + b, 0), ids.length);
      assert.deepEqual(fired.sort(), ids);
      assert.equal(await rs[0].sweepDueWills(Date.now(), fire), 0);
    });

    it('will delay is cut to the session expiry, and a reconnect within the delay cancels it', async () => {
      const [r] = registries(1);
      const a = await r.claim('e1', 'n/1', { cleanStart: true, will: will('e1', 100), sessionExpiryS: 0, owner: 'u' });
      assert.equal((await r.abnormalDisconnect('e1', a.epoch, 0)).kind, 'fire', 'session expiry 0 → will now');
      const b = await r.claim('e2', 'n/1', { cleanStart: true, will: will('e2', 100), sessionExpiryS: 100, owner: 'u' });
      assert.equal((await r.abnormalDisconnect('e2', b.epoch, 100)).kind, 'scheduled');
      const c = await r.claim('e2', 'n/2', { cleanStart: false, sessionExpiryS: 100, owner: 'u' });
      assert.deepEqual([c.previousWill, c.willToFire], ['cancelled', undefined]);
      const d = await r.claim('e3', 'n/1', { cleanStart: true, will: will('e3', 100), sessionExpiryS: 100, owner: 'u' });
      await r.abnormalDisconnect('e3', d.epoch, 100);
      const e = await r.claim('e3', 'n/2', { cleanStart: true, sessionExpiryS: 0, owner: 'u' });
      assert.equal(e.previousWill, 'fire', 'clean start ends the old session: its will goes now');
    });

    it('a survivor that reaped a node fires or schedules its clients\' wills, leaving moved clients alone', async () => {
      const [r, other] = registries(2);
      const dead = 'dead/1';
      await r.claim('o1', dead, { cleanStart: true, will: will('o1', 0), sessionExpiryS: 0, owner: 'u' });
      await r.claim('o2', dead, { cleanStart: true, will: will('o2', 30), sessionExpiryS: 3600, owner: 'u' });
      await r.claim('o3', dead, { cleanStart: true, will: will('o3', 0), sessionExpiryS: 0, owner: 'u' });
      await r.claim('o3', 'alive/1', { cleanStart: false, will: will('o3', 0), sessionExpiryS: 0, owner: 'u' }); // moved
      await r.claim('o4', dead, { cleanStart: true, sessionExpiryS: 0, owner: 'u' });
      const fired: string[] = [];
      const reports = await Promise.all([r, other].map((x, i) => x.orphanClients(dead, (w) => void fired.push(w.clientId), `reaper/${i}`)));
      // o3's old will fired at its reconnect (delay 0 takeover), not here
      assert.deepEqual(fired.sort(), ['o1']);
      assert.equal(reports.reduce((a, x) => a + x.scheduled, 0) >= 1, true);
      assert.deepEqual(await r.owner('o3'), { node: 'alive/1', epoch: 2, online: true });
      assert.equal((await r.owner('o2'))?.online, false);
      assert.match((await r.owner('o2'))!.node, /^reaper\//, 'the reaper owns the orphaned client (offline)');
      assert.deepEqual(reports.flatMap((x) => x.orphaned).sort(), ['o1', 'o2', 'o4']);
    });

    it('two reapers of a node with 2,500 clients (batches of 1,000): each will fired or scheduled once, delayed ones swept in batches once', async () => {
      const [r, other] = registries(2);
      const dead = 'fleet-dead/1';
      const n = 2500;
      // claims in parallel, a batch at a time: setting up, not what is measured
      for (let i = 0; i < n; i += 500) {
        await Promise.all(
          Array.from({ length: Math.min(500, n - i) }, (_, k) => {
            const id = `f${i + k}`;
            // one in five has a will delay (1 s), the rest fire at once
            return r.claim(id, dead, { cleanStart: true, will: will(id, (i + k) % 5 === 0 ? 1 : 0), sessionExpiryS: 3600, owner: 'u' });
          }),
        );
      }
      const fired: string[] = [];
      const fire = (w: WillRecord) => void fired.push(w.clientId);
      const reports = await Promise.all([r, other].map((x, i) => x.orphanClients(dead, fire, `fleet-reaper/${i}`)));
      const delayed = n / 5;
      assert.equal(fired.length, n - delayed);
      assert.equal(new Set(fired).size, n - delayed, 'no will fired twice');
      assert.equal(reports.reduce((a, x) => a + x.fired, 0), n - delayed);
      assert.equal(new Set(reports.flatMap((x) => x.orphaned)).size, n);
      fired.length = 0;
      await sleep(1100);
      // two concurrent sweepers with batches of 300: the 500 due wills each fire once
      const counts = await Promise.all([r, other].map((x) => x.sweepDueWills(Date.now(), fire, 300)));
      assert.equal(counts[0] + counts[1], delayed);
      assert.equal(new Set(fired).size, delayed);
      assert.ok(fired.every((id) => Number(id.slice(1)) % 5 === 0));
      assert.equal(await r.sweepDueWills(Date.now(), fire), 0);
    });
  });
}

let single: TestRedis;
let cluster: TestRedisCluster | undefined;
before(async () => {
  single = await startRedis();
});
after(async () => {
  await single?.stop();
  await cluster?.stop();
});

suite('single Redis', () => ({ url: single.url }));

describe('on a 3-master Redis Cluster', { timeout: 90000 }, () => {
  before(async () => {
    cluster = await startRedisCluster();
  });
  suite('Redis Cluster', () => ({ clusterNodes: cluster!.nodes }));
});
