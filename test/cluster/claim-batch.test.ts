// The claims (and normal disconnects) of one event-loop turn share Redis calls: on one Redis a
// turn's claims are one claim-client.lua call, counted by Redis itself (INFO commandstats).
// Batched or not, ownership holds: the same client id twice in a batch gets two epochs in
// order, another identity's claim in the same batch is refused, Clean Start ends the stored
// session in the claim. A reaper moves a dead member's clients 250 to a call. Also on a
// 3-master Redis Cluster, where each client is claimed (and orphaned) alone.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, startRedisCluster, type TestRedis, type TestRedisCluster } from '../helpers/redis.js';
import { ClientRegistry, type ClaimResult } from '../../src/cluster/registry.js';
import { decodeWill } from '../../src/store/redis/codec.js';
import type { RedisTarget } from '../../src/redis/connection.js';
import { RedisSessionStore } from '../../src/store/redis/sessions.js';
import { ClientIdHeldError, StaleEpochError } from '../../src/store/errors.js';
import type { WillRecord } from '../../src/store/types.js';
import { Closer, newKeys, will } from './support.js';

/** Script calls Redis has run so far (EVAL the first time on a connection, EVALSHA after). */
async function scriptCalls(redis: TestRedis): Promise<number> {
  const info = await redis.client().info('commandstats');
  let calls = 0;
  for (const m of info.matchAll(/^cmdstat_(eval|evalsha):calls=(\d+)/gm)) calls += Number(m[2]);
  return calls;
}

function suite(name: string, target: () => RedisTarget, single?: () => TestRedis) {
  describe(`claims in batches (${name})`, { timeout: 60000 }, () => {
    const closer = new Closer();
    after(() => closer.closeAll());

    function setup() {
      const keys = newKeys('batch');
      const redis = closer.redis(target());
      return { keys, redis, registry: new ClientRegistry({ redis, keys }), sessions: new RedisSessionStore({ redis, keys }) };
    }

    if (single) {
      it('50 CONNECTs of one turn: one claim call, every client id in the reaper index; 50 disconnects: one call', async () => {
        const { registry, redis, keys } = setup();
        await registry.claim('warm', 'n/1', { cleanStart: true, sessionExpiryS: 0, owner: 'u' }); // the script is loaded
        const ids = Array.from({ length: 50 }, (_, i) => `b-${i}`);
        const before = await scriptCalls(single());
        const claims = await Promise.all(ids.map((id) => registry.claim(id, 'n/1', { cleanStart: true, will: will(id, 0), sessionExpiryS: 0, owner: 'u' })));
        assert.equal((await scriptCalls(single())) - before, 1, 'one claim-client.lua call for the turn');
        assert.deepEqual(claims.map((c) => c.epoch), ids.map(() => 1));
        const indexed = new Set(await redis.client.smembers(keys.nodeClients('n/1')));
        assert.ok(ids.every((id) => indexed.has(id)), 'every claimed client id is in the reaper index');

        const mid = await scriptCalls(single());
        const cancelled = await Promise.all(ids.map((id, i) => registry.normalDisconnect(id, claims[i].epoch)));
        assert.equal((await scriptCalls(single())) - mid, 1, 'one will-normal-disconnect.lua call for the turn');
        assert.deepEqual(cancelled, ids.map(() => true), 'each will dropped unpublished');
        for (const id of ids) assert.deepEqual(await registry.owner(id), { node: 'n/1', epoch: 1, online: false });
      });
    }

    it('a reaper moves 600 clients of a dead member in batches (one orphan-client.lua call per 250 on one Redis): each will fired or scheduled once', async () => {
      const { registry, redis, keys, sessions } = setup();
      const fire = (into: string[]) => (w: WillRecord) => void into.push(w.clientId);
      // the script is loaded on this connection (its first call would count twice: NOSCRIPT, then EVAL)
      await registry.claim('warm', 'warm-dead/1', { cleanStart: true, sessionExpiryS: 0, owner: 'u' });
      await registry.orphanClients('warm-dead/1', fire([]), 'reaper/1');
      const dead = 'dead/1';
      const ids = Array.from({ length: 600 }, (_, i) => `o-${i}`);
      // one in three has a will delay (30 s): scheduled, not fired
      const delayed = (i: number) => i % 3 === 0;
      await Promise.all(ids.map((id, i) => registry.claim(id, dead, { cleanStart: true, will: will(id, delayed(i) ? 30 : 0), sessionExpiryS: 3600, owner: 'u' })));
      await registry.claim('o-moved', dead, { cleanStart: true, will: will('o-moved', 0), sessionExpiryS: 0, owner: 'u' });
      await registry.claim('o-moved', 'alive/1', { cleanStart: false, sessionExpiryS: 0, owner: 'u' }); // connected elsewhere since
      // three of them have a stored persistent session: only those are the reaper's to load
      const stored = [ids[5], ids[6], ids[400]];
      for (const id of stored) await sessions.save({ clientId: id, epoch: 1, expiryIntervalS: 3600, subscriptions: [], pending: [], incomingQos2: [] });
      const before = single ? await scriptCalls(single()) : 0;
      const fired: string[] = [];
      const report = await registry.orphanClients(dead, fire(fired), 'reaper/1');
      if (single) {
        // SSCAN's COUNT is a hint: a batch holds about 250, so 3 calls, maybe one more (601 one by one)
        const calls = (await scriptCalls(single())) - before;
        assert.ok(calls >= 3 && calls <= 5, `about one orphan-client.lua call per 250 clients, not one per client: ${calls} for 601`);
      }
      const firing = ids.filter((_, i) => !delayed(i));
      assert.deepEqual(fired.sort(), firing.sort(), 'each delay-0 will fired once');
      assert.deepEqual([report.clients, report.fired, report.scheduled, report.orphaned.length], [601, firing.length, 200, 600]);
      assert.deepEqual(report.moved, ['o-moved']);
      assert.deepEqual([...report.withSession].sort(), [...stored].sort(), 'the clients with a stored session, and no other');
      assert.equal(await redis.client.zcard(keys.dueWills), 200, 'every scheduled will in the due index');
      const indexed = new Set(await redis.client.smembers(keys.nodeClients('reaper/1')));
      assert.ok(ids.every((id) => indexed.has(id)), 'every orphaned client id in the reaper index');
      // the orphan claim is an incarnation of its own (epoch 2): the dead member's writes under 1 are refused
      for (const id of [ids[0], ids[1], ids[599]]) assert.deepEqual(await registry.owner(id), { node: 'reaper/1', epoch: 2, online: false });
      assert.deepEqual(await registry.owner('o-moved'), { node: 'alive/1', epoch: 2, online: true });
      // the stored sessions are fenced at it: a write the dead member still makes (a member
      // reaped while it served its clients, a command it queued while Redis was away) is refused
      for (const id of stored) {
        assert.equal((await sessions.load(id))?.epoch, 2, `${id}: stored session fenced at the orphan claim's epoch`);
        await assert.rejects(sessions.addIncomingQos2(id, 1, 7, 'late'), StaleEpochError, `${id}: the dead member's late write`);
      }
      assert.equal(await redis.client.exists(keys.session(ids[0])), 0, 'no session is made for a client that had none');
      // the client's next CONNECT is a newer incarnation still: it resumes the fenced session
      const back = await registry.claim(stored[0], 'alive/1', { cleanStart: false, sessionExpiryS: 3600, owner: 'u', resume: 'load' });
      assert.equal(back.epoch, 3);
      assert.notEqual(back.stored, 'stale');
      // a second reaper's pass over the same index (re-created) finds nothing of the dead member's
      await redis.client.sadd(keys.nodeClients(dead), ...ids);
      const again: string[] = [];
      const second = await registry.orphanClients(dead, fire(again), 'reaper/2');
      assert.deepEqual([again.length, second.orphaned.length, second.moved.length], [0, 0, 600]);
    });

    if (single) {
      it('a reaper keeps three orphan-client calls in Redis, the first one small, and publishes 50 wills a turn: when the first will fires the next two calls are sent', async () => {
        const { registry, redis } = setup();
        const fire = (into: string[]) => (w: WillRecord) => void into.push(w.clientId);
        await registry.claim('warm', 'warm-dead/2', { cleanStart: true, sessionExpiryS: 0, owner: 'u' });
        await registry.orphanClients('warm-dead/2', fire([]), 'reaper/1');
        // ids the script must not mangle as it builds their keys (braces, spaces, Lua pattern characters, non-ASCII)
        const odd = ['p-{x}', 'p }:owner x', 'p-%s.*', 'p-ünï-☃'];
        const ids = [...Array.from({ length: 896 }, (_, i) => `p-${i}`), ...odd];
        await Promise.all(ids.map((id) => registry.claim(id, 'dead/2', { cleanStart: true, will: will(id, 0), sessionExpiryS: 0, owner: 'u' })));
        // what the reaper sends, as it sends it: the clients of each orphan-client call
        const sent: number[] = [];
        const keysPerCall = new Set<number>();
        const run = redis.run.bind(redis);
        redis.run = (command, k, args) => {
          if (command === 'orphanClient') {
            sent.push(args.length - 6); // dead, reaper, lead, token, key head, key endings, then the ids
            keysPerCall.add(k.length);
          }
          return run(command, k, args);
        };
        // turns of the event loop, counted by a setImmediate chain while the reaper works
        let turns = 0;
        let counting = true;
        const tick = () => {
          turns++;
          if (counting) setImmediate(tick);
        };
        setImmediate(tick);
        const perTurn = new Map<number, number>();
        let sentAtFirstFire = -1;
        const fired: string[] = [];
        const report = await registry.orphanClients('dead/2', (w) => {
          if (fired.length === 0) sentAtFirstFire = sent.length;
          fired.push(w.clientId);
          perTurn.set(turns, (perTurn.get(turns) ?? 0) + 1);
        }, 'reaper/1');
        counting = false;
        redis.run = run;
        assert.deepEqual([...fired].sort(), [...ids].sort(), 'each will fired once');
        assert.equal(report.clients, 900);
        assert.ok(sent[0] <= 50, `the first call is small (the first wills go out sooner): ${sent[0]} clients`);
        assert.equal(sentAtFirstFire, 3, 'the first reply is published while the next two calls are in Redis');
        assert.equal(sent.reduce((a, b) => a + b, 0), 900, 'each client in one call');
        assert.deepEqual([...keysPerCall], [1], 'a call declares the reaper index only: the script builds the clients\' keys from their ids');
        for (const id of [...odd, ids[0]]) assert.deepEqual(await registry.owner(id), { node: 'reaper/1', epoch: 2, online: false }, `${id}: the keys the script built are keys.ts's`);
        // a whole 250-client reply in one turn held up the reaper's lease renewal on a busy machine
        assert.ok(Math.max(...perTurn.values()) <= 50, `at most 50 wills published per turn of the event loop: ${Math.max(...perTurn.values())}`);
      });
    }

    it('the same client id twice in one turn: two epochs in order, the later one owns it', async () => {
      const { registry } = setup();
      const [first, second] = await Promise.all([
        registry.claim('twice', 'n/1', { cleanStart: true, will: will('twice', 0), sessionExpiryS: 0, owner: 'u' }),
        registry.claim('twice', 'n/1', { cleanStart: true, sessionExpiryS: 0, owner: 'u' }),
      ]);
      assert.deepEqual([first.epoch, first.previousOwner], [1, '']);
      assert.deepEqual([second.epoch, second.previousOwner, second.previousOnline], [2, 'n/1', true]);
      assert.equal(second.previousWill, 'fire', 'the first incarnation\'s delay-0 will goes to the later claim, once');
      assert.equal(second.willToFire?.epoch, 1);
      assert.deepEqual(await registry.owner('twice'), { node: 'n/1', epoch: 2, online: true });
      // the earlier incarnation can no longer settle anything
      await assert.rejects(registry.normalDisconnect('twice', first.epoch), StaleEpochError);
    });

    it('another identity in the same turn is refused and changes nothing; the others of the batch go on', async () => {
      const { registry } = setup();
      const results = await Promise.allSettled([
        registry.claim('mine', 'n/1', { cleanStart: true, will: will('mine', 0), sessionExpiryS: 0, owner: 'alice' }),
        registry.claim('mine', 'n/2', { cleanStart: true, sessionExpiryS: 0, owner: 'mallory' }),
        registry.claim('other', 'n/1', { cleanStart: true, sessionExpiryS: 0, owner: 'bob' }),
      ]);
      assert.equal(results[0].status, 'fulfilled');
      assert.equal(results[1].status, 'rejected');
      assert.ok((results[1] as PromiseRejectedResult).reason instanceof ClientIdHeldError);
      assert.equal(results[2].status, 'fulfilled');
      assert.deepEqual(await registry.owner('mine'), { node: 'n/1', epoch: 1, online: true });
      // Alice's will is untouched: her own normal disconnect still drops it
      assert.equal(await registry.normalDisconnect('mine', 1), true);
    });

    it('Clean Start ends the stored session in the claim itself', async () => {
      const { registry, sessions } = setup();
      const first = await registry.claim('stored', 'n/1', { cleanStart: false, sessionExpiryS: 300, owner: 'u' });
      await sessions.save({ clientId: 'stored', epoch: first.epoch, expiryIntervalS: 300, subscriptions: [{ filter: 'a/#', qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0 }], pending: [], incomingQos2: [7] });
      assert.ok(await sessions.load('stored'), 'stored');
      const second = await registry.claim('stored', 'n/1', { cleanStart: true, sessionExpiryS: 0, owner: 'u' });
      assert.equal(second.epoch, first.epoch + 1);
      assert.equal(await sessions.load('stored'), undefined, 'no stored session after a Clean Start claim');
      // a resuming claim keeps it
      const third = await registry.claim('kept', 'n/1', { cleanStart: false, sessionExpiryS: 300, owner: 'u' });
      await sessions.save({ clientId: 'kept', epoch: third.epoch, expiryIntervalS: 300, subscriptions: [], pending: [], incomingQos2: [] });
      await registry.claim('kept', 'n/1', { cleanStart: false, sessionExpiryS: 300, owner: 'u' });
      assert.ok(await sessions.load('kept'), 'a claim without Clean Start leaves the session');
    });

    /** A persistent session stored by node n/A for `id`, offline (a TTL), with its will scheduled. */
    async function storedOffline(t: ReturnType<typeof setup>, id: string, owner: string): Promise<number> {
      const first = await t.registry.claim(id, 'n/A', { cleanStart: false, will: will(id, 30, `old-${id}`), sessionExpiryS: 300, owner });
      const sub = { filter: `t/${id}/#`, qos: 1 as const, noLocal: false, retainAsPublished: false, retainHandling: 0 as const };
      await t.sessions.save({ clientId: id, epoch: first.epoch, expiryIntervalS: 300, subscriptions: [sub], pending: [], incomingQos2: [] });
      await t.sessions.appendPending(id, first.epoch, { message: { topic: `t/${id}/m`, payload: Buffer.from(`for-${id}`), qos: 1, retain: false, origin: 'x', id: `m-${id}` }, qos: 1, retainFlag: false });
      assert.equal((await t.registry.abnormalDisconnect(id, first.epoch, 300)).kind, 'scheduled');
      await t.sessions.setExpiry(id, first.epoch, 300_000);
      return first.epoch;
    }

    /** The will record stored for a client: its epoch and payload. */
    async function storedWill(t: ReturnType<typeof setup>, id: string): Promise<{ epoch: number; payload: string } | undefined> {
      const rec = await t.redis.client.hgetBuffer(t.keys.clientWill(id), 'rec');
      if (!rec) return undefined;
      return { epoch: Number(await t.redis.client.hget(t.keys.clientWill(id), 'epoch')), payload: decodeWill(rec).message.payload.toString() };
    }

    it('40 resumes of one turn on another node: one claim call; each gets its own stored session, fenced at its new epoch and kept (new expiry, no time to live), and its own new will', async () => {
      const t = setup();
      const { registry, sessions, redis, keys } = t;
      const ids = Array.from({ length: 40 }, (_, i) => `r-${i}`);
      const epochs = await Promise.all(ids.map((id, i) => storedOffline(t, id, `owner-${i}`)));
      await registry.claim('warm', 'n/B', { cleanStart: true, sessionExpiryS: 0, owner: 'u' }); // the script is loaded
      const before = single ? await scriptCalls(single()) : 0;
      const claims = await Promise.all([
        ...ids.map((id, i) => registry.claim(id, 'n/B', { cleanStart: false, will: will(id, 30, `new-${id}`), sessionExpiryS: 600, owner: `owner-${i}`, resume: 'load' })),
        registry.claim('r-fresh', 'n/B', { cleanStart: false, sessionExpiryS: 600, owner: 'u', resume: 'load' }),
      ]);
      if (single) assert.equal((await scriptCalls(single())) - before, 1, 'one claim-client.lua call for the turn (no fence, load, save or PERSIST of their own)');
      for (const [i, id] of ids.entries()) {
        const c = claims[i];
        assert.equal(c.epoch, epochs[i] + 1);
        assert.deepEqual([c.previousOwner, c.previousWill], ['n/A', 'cancelled'], `${id}: the reconnect cancels the delayed will`);
        const snap = c.stored;
        assert.ok(snap && typeof snap === 'object', `${id}: the stored session came with the claim`);
        assert.equal(snap.clientId, id);
        assert.equal(snap.epoch, c.epoch, `${id}: fenced at the new epoch`);
        assert.deepEqual(snap.subscriptions.map((s) => s.filter), [`t/${id}/#`], `${id}: its own subscriptions`);
        assert.deepEqual(snap.pending.map((p) => p.message.payload.toString()), [`for-${id}`], `${id}: its own pending message`);
        assert.deepEqual(snap.seen, [`m-${id}`]);
        const now = await sessions.load(id);
        assert.deepEqual([now?.epoch, now?.expiryIntervalS, now?.pending.length], [c.epoch, 600, 1], `${id}: stored under the new epoch and expiry`);
        assert.equal(await redis.client.pttl(keys.session(id)), -1, `${id}: no time to live while connected`);
        assert.equal(await redis.client.pttl(keys.sessionPending(id)), -1);
        assert.deepEqual(await storedWill(t, id), { epoch: c.epoch, payload: `new-${id}` }, `${id}: its own new will`);
        // the older incarnation can no longer append
        await assert.rejects(sessions.appendPending(id, epochs[i], { message: { topic: 'late', payload: Buffer.from('x'), qos: 1, retain: false, origin: 'x' }, qos: 1, retainFlag: false }), StaleEpochError);
      }
      assert.equal(claims[40].stored, 'none', 'no stored session: an empty one is stored');
      const fresh = await sessions.load('r-fresh');
      assert.deepEqual([fresh?.epoch, fresh?.expiryIntervalS, fresh?.subscriptions.length, fresh?.pending.length], [claims[40].epoch, 600, 0, 0]);
    });

    it('a resume by another identity inside a batch is refused and changes nothing of the owner\'s session or will; the others resume, and the owner still can', async () => {
      const t = setup();
      const { registry, sessions, redis, keys } = t;
      const epoch = await storedOffline(t, 'owned', 'alice');
      await storedOffline(t, 'bobs', 'bob');
      const ttl = await redis.client.pttl(keys.session('owned'));
      const results = await Promise.allSettled([
        registry.claim('bobs', 'n/B', { cleanStart: false, sessionExpiryS: 600, owner: 'bob', resume: 'load' }),
        registry.claim('owned', 'n/B', { cleanStart: false, will: will('owned', 0, 'mallory'), sessionExpiryS: 600, owner: 'mallory', resume: 'load' }),
        registry.claim('owned', 'n/B', { cleanStart: true, sessionExpiryS: 0, owner: 'mallory' }),
      ]);
      assert.equal(results[0].status, 'fulfilled');
      assert.equal(typeof (results[0] as PromiseFulfilledResult<ClaimResult>).value.stored, 'object', 'bob resumed in the same batch');
      for (const r of results.slice(1)) assert.ok(r.status === 'rejected' && r.reason instanceof ClientIdHeldError, 'mallory refused');
      const kept = await sessions.load('owned');
      assert.deepEqual([kept?.epoch, kept?.expiryIntervalS, kept?.pending.length], [epoch, 300, 1], 'alice\'s session untouched');
      const ttlAfter = await redis.client.pttl(keys.session('owned'));
      assert.ok(ttlAfter > 0 && ttlAfter <= ttl, 'still offline: its time to live runs on');
      assert.deepEqual(await storedWill(t, 'owned'), { epoch, payload: 'old-owned' }, 'alice\'s will untouched');
      assert.deepEqual(await registry.owner('owned'), { node: 'n/A', epoch, online: false });
      // a failed takeover locks nobody out: alice resumes hers
      const mine = await registry.claim('owned', 'n/B', { cleanStart: false, sessionExpiryS: 600, owner: 'alice', resume: 'load' });
      assert.equal(typeof mine.stored === 'object' && mine.stored.pending[0]?.message.payload.toString(), 'for-owned');
    });

    it('the same session resumed twice in one turn: the later claim fences the earlier one, both read it, it is kept at the later epoch', async () => {
      const t = setup();
      const { registry, sessions } = t;
      const epoch = await storedOffline(t, 'race', 'u');
      const [first, second] = await Promise.all([
        registry.claim('race', 'n/B', { cleanStart: false, will: will('race', 30, 'first'), sessionExpiryS: 600, owner: 'u', resume: 'load' }),
        registry.claim('race', 'n/C', { cleanStart: false, will: will('race', 30, 'second'), sessionExpiryS: 900, owner: 'u', resume: 'load' }),
      ]);
      assert.deepEqual([first.epoch, second.epoch], [epoch + 1, epoch + 2]);
      assert.deepEqual([second.previousOwner, second.previousOnline], ['n/B', true], 'the later one takes over from the earlier');
      assert.ok(typeof first.stored === 'object' && typeof second.stored === 'object');
      assert.deepEqual([first.stored.epoch, second.stored.epoch], [first.epoch, second.epoch]);
      assert.deepEqual(second.stored.pending.map((p) => p.message.payload.toString()), ['for-race'], 'nothing lost between the two');
      const now = await sessions.load('race');
      assert.deepEqual([now?.epoch, now?.expiryIntervalS], [second.epoch, 900]);
      assert.deepEqual(await storedWill(t, 'race'), { epoch: second.epoch, payload: 'second' }, 'the later will');
      assert.equal(second.previousWill, 'cancelled', 'the earlier will, delayed, cancelled by the reconnect (never fired)');
      await assert.rejects(sessions.appendPending('race', first.epoch, { message: { topic: 'late', payload: Buffer.from('x'), qos: 1, retain: false, origin: 'x' }, qos: 1, retainFlag: false }), StaleEpochError);
      await assert.rejects(registry.normalDisconnect('race', first.epoch), StaleEpochError);
    });

    it('a reconnect to the node holding the copy marks the stored session without fencing it; a Clean Start claimed after it in the same call ends it, and the reconnect\'s save of its copy then writes nothing', async () => {
      const t = setup();
      const { registry, sessions } = t;
      await storedOffline(t, 'local', 'u');
      const [again, clean] = await Promise.all([
        registry.claim('local', 'n/A', { cleanStart: false, sessionExpiryS: 600, owner: 'u', resume: 'mark' }),
        registry.claim('local', 'n/A', { cleanStart: true, sessionExpiryS: 0, owner: 'u' }),
      ]);
      assert.equal(again.stored, 'marked');
      assert.equal(clean.epoch, again.epoch + 1);
      assert.equal(await sessions.load('local'), undefined, 'the Clean Start ended the session');
      const copy = { clientId: 'local', epoch: again.epoch, expiryIntervalS: 600, subscriptions: [], pending: [], incomingQos2: [] };
      await assert.rejects(sessions.save(copy, true), StaleEpochError, 'the superseded reconnect does not write the ended session back');
      assert.equal(await sessions.load('local'), undefined);

      // without a newer claim the marked save goes through; the mark fences nothing: the copy's own appends in flight still land
      const epoch2 = await storedOffline(t, 'local2', 'u');
      const mine = await registry.claim('local2', 'n/A', { cleanStart: false, sessionExpiryS: 600, owner: 'u', resume: 'mark' });
      assert.equal(mine.stored, 'marked');
      assert.notEqual(await sessions.appendPending('local2', epoch2, { message: { topic: 't/late', payload: Buffer.from('late'), qos: 1, retain: false, origin: 'x' }, qos: 1, retainFlag: false }), undefined, 'an append of the copy\'s epoch still lands');
      await sessions.save({ ...copy, clientId: 'local2', epoch: mine.epoch }, true);
      assert.deepEqual([(await sessions.load('local2'))?.epoch, (await sessions.load('local2'))?.expiryIntervalS], [mine.epoch, 600]);
      // a marked save of an older claim after a newer one marked it: refused
      const newer = await registry.claim('local2', 'n/A', { cleanStart: false, sessionExpiryS: 600, owner: 'u', resume: 'mark' });
      await assert.rejects(sessions.save({ ...copy, clientId: 'local2', epoch: mine.epoch }, true), StaleEpochError);
      await sessions.save({ ...copy, clientId: 'local2', epoch: newer.epoch }, true);
    });

    it('a resume that finds a newer incarnation\'s session stored leaves it untouched (stale)', async () => {
      const t = setup();
      const { registry, sessions, redis, keys } = t;
      await registry.claim('newer', 'n/A', { cleanStart: false, sessionExpiryS: 300, owner: 'u' });
      await sessions.save({ clientId: 'newer', epoch: 50, expiryIntervalS: 300, subscriptions: [], pending: [], incomingQos2: [] });
      await sessions.setExpiry('newer', 50, 300_000);
      const c = await registry.claim('newer', 'n/B', { cleanStart: false, sessionExpiryS: 600, owner: 'u', resume: 'load' });
      assert.equal(c.stored, 'stale');
      assert.deepEqual([(await sessions.load('newer'))?.epoch, (await sessions.load('newer'))?.expiryIntervalS], [50, 300]);
      assert.ok((await redis.client.pttl(keys.session('newer'))) > 0, 'its time to live untouched');
    });

    it('a stale disconnect in a batch fails alone', async () => {
      const { registry } = setup();
      await registry.claim('s1', 'n/1', { cleanStart: true, sessionExpiryS: 0, owner: 'u' });
      await registry.claim('s1', 'n/1', { cleanStart: true, sessionExpiryS: 0, owner: 'u' });
      const s2 = await registry.claim('s2', 'n/1', { cleanStart: true, will: will('s2', 0), sessionExpiryS: 0, owner: 'u' });
      const [stale, fresh] = await Promise.allSettled([registry.normalDisconnect('s1', 1), registry.normalDisconnect('s2', s2.epoch)]);
      assert.ok(stale.status === 'rejected' && stale.reason instanceof StaleEpochError);
      assert.deepEqual(fresh, { status: 'fulfilled', value: true });
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

suite('single Redis', () => ({ url: single.url }), () => single);

describe('on a 3-master Redis Cluster', { timeout: 90000 }, () => {
  before(async () => {
    cluster = await startRedisCluster();
  });
  suite('Redis Cluster', () => ({ clusterNodes: cluster!.nodes }));
});
