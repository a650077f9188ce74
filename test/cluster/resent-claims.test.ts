// Claims that ioredis runs twice: a script whose reply dies with its connection is sent again
// on the next connection (autoResendUnfulfilledCommands), so Redis runs it twice and the
// caller sees only the second answer. The claim of a dead member's reaping and of a due will
// must answer the same claim as the first run did ("won", "fire"), or the member would stay
// unreaped and the will unfired (the first run took the lease / the record); so must a
// reaper's batch of a dead member's clients (orphan-client.lua: a whole batch's wills). A
// real Redis behind a TCP proxy that swallows the first reply and drops that connection.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { Membership } from '../../src/cluster/membership.js';
import { ClientRegistry } from '../../src/cluster/registry.js';
import { Closer, newKeys, waitFor, will } from './support.js';

let redis: TestRedis;
let proxy: TcpProxy;
const closer = new Closer();

before(async () => {
  redis = await startRedis();
  proxy = await startTcpProxy(redis.port);
});
after(async () => {
  await closer.closeAll();
  await proxy?.close();
  await redis?.stop();
});

/** A connection through the proxy, ready, so the next reply it reads is the claim's. */
async function proxied() {
  const conn = closer.redis({ url: `redis://127.0.0.1:${proxy.port}` });
  await waitFor(() => conn.client.status === 'ready', 10_000, 'connected through the proxy');
  return conn;
}

describe('claims re-sent by ioredis after a lost reply', { timeout: 60_000 }, () => {
  test("a dead member's reaping: the re-sent claim still wins, another claim does not", async () => {
    const keys = newKeys('rc');
    const conn = await proxied();
    const direct = closer.redis({ url: redis.url });
    await direct.client.zadd(keys.nodeLeases, 1, 'dead/1'); // expired long ago
    const reaper = new Membership({ redis: conn, keys, nodeId: 'r', heartbeatMs: 100, nodeTimeoutMs: 500, autoRenew: false });
    const other = new Membership({ redis: direct, keys, nodeId: 'o', heartbeatMs: 100, nodeTimeoutMs: 500, autoRenew: false });
    const lost = proxy.cutOnReply('won');
    const won = await reaper.reap('dead/1');
    await lost; // the first reply did die: the answer came from the re-sent script
    assert.equal(won, true, 'the re-sent claim answers won');
    assert.equal(await direct.client.zscore(keys.nodeLeases, 'dead/1'), null);
    assert.equal(await other.reap('dead/1'), false, 'another claim finds it gone');
  });

  test('a due will: the re-sent claim still fires it, once', async () => {
    const keys = newKeys('rw');
    const conn = await proxied();
    const registry = new ClientRegistry({ redis: conn, keys });
    const directConn = closer.redis({ url: redis.url });
    const direct = new ClientRegistry({ redis: directConn, keys });
    const { epoch } = await direct.claim('rw1', 'n/1', { cleanStart: true, will: will('rw1', 1), sessionExpiryS: 3600, owner: 'u' });
    assert.equal((await direct.abnormalDisconnect('rw1', epoch, 3600)).kind, 'scheduled');
    const dueAt = Number(await directConn.client.hget(keys.clientWill('rw1'), 'dueAt'));
    await waitFor(async () => {
      const [s, us] = await directConn.client.time();
      return Number(s) * 1000 + Math.floor(Number(us) / 1000) > dueAt;
    }, 10_000, 'the will due on the Redis clock');
    const lost = proxy.cutOnReply('fire');
    const claimed = await registry.claimDueWill('rw1', epoch);
    await lost; // the first reply did die: the answer came from the re-sent script
    assert.equal(claimed.kind, 'fire', 'the re-sent claim answers fire');
    assert.equal(claimed.kind === 'fire' && claimed.will.clientId, 'rw1');
    assert.equal((await direct.claimDueWill('rw1', epoch)).kind, 'none', 'another claim finds nothing');
  });

  test("a dead member's clients: the re-sent orphan batch still fires each will once and schedules the delayed ones", async () => {
    const keys = newKeys('ro');
    const conn = await proxied();
    const registry = new ClientRegistry({ redis: conn, keys });
    const directConn = closer.redis({ url: redis.url });
    const direct = new ClientRegistry({ redis: directConn, keys });
    const ids = Array.from({ length: 20 }, (_, i) => `ro${i}`);
    const delayed = (i: number) => i % 4 === 0;
    for (const [i, id] of ids.entries()) await direct.claim(id, 'dead/1', { cleanStart: true, will: will(id, delayed(i) ? 30 : 0), sessionExpiryS: 3600, owner: 'u' });
    const fired: string[] = [];
    const lost = proxy.cutOnReply('fire');
    const report = await registry.orphanClients('dead/1', (w) => void fired.push(w.clientId), 'reaper/1');
    await lost; // the first reply did die: the answers came from the re-sent script
    assert.deepEqual(fired.sort(), ids.filter((_, i) => !delayed(i)).sort(), 'every delay-0 will fired, once');
    assert.deepEqual([report.orphaned.length, report.scheduled, report.moved.length], [20, 5, 0]);
    assert.equal(await directConn.client.zcard(keys.dueWills), 5, 'the delayed wills are in the due index');
    // another reaper going over the same clients finds them the first reaper's
    await directConn.client.sadd(keys.nodeClients('dead/1'), ...ids);
    const again: string[] = [];
    const other = await direct.orphanClients('dead/1', (w) => void again.push(w.clientId), 'reaper/2');
    assert.deepEqual([again.length, other.moved.length], [0, 20]);
  });

  test('the same orphan claim run again after its client connected elsewhere: the will it took still fires, nothing else changes', async () => {
    const keys = newKeys('rm');
    const conn = closer.redis({ url: redis.url });
    const registry = new ClientRegistry({ redis: conn, keys });
    await registry.claim('rm1', 'dead/1', { cleanStart: true, will: will('rm1', 0), sessionExpiryS: 0, owner: 'u' });
    await registry.claim('rm2', 'dead/1', { cleanStart: true, will: will('rm2', 30), sessionExpiryS: 3600, owner: 'u' });
    // orphan-client.lua run twice with one token, as ioredis re-sends it; in between both clients reconnect
    // on one Redis the script builds the clients' keys from their ids (as the reaper calls it)
    const { head, ends } = keys.orphanClientKeyParts;
    const call = () => conn.run('orphanClient', [keys.nodeClients('reaper/1')], ['dead/1', 'reaper/1', 1, 'tok', head, ends, 'rm1', 'rm2']) as Promise<Buffer[][]>;
    const first = await call();
    assert.deepEqual(first.map((r) => String(r[0])), ['fire', 'scheduled']);
    const same = await call();
    assert.deepEqual(same.map((r) => String(r[0])), ['fire', 'scheduled'], 'run again at once: the same answers');
    assert.deepEqual(same[0][1], first[0][1], 'the same will record');
    await registry.claim('rm1', 'alive/1', { cleanStart: false, sessionExpiryS: 0, owner: 'u' });
    const back = await registry.claim('rm2', 'alive/1', { cleanStart: false, sessionExpiryS: 3600, owner: 'u' });
    assert.equal(back.previousWill, 'cancelled', 'the reconnect within the delay cancels the scheduled will');
    const later = await call();
    assert.equal(String(later[0][0]), 'not_owner');
    assert.deepEqual(later[0][1], first[0][1], 'the will the first run took is still handed out (nobody else has it)');
    assert.deepEqual(later[1].map(String), ['not_owner'], 'the cancelled will stays cancelled');
    // the keys declared instead (as a Redis Cluster call has them): the same client, the same answer
    assert.equal((await conn.run('orphanClient', [keys.nodeClients('reaper/2'), ...keys.orphanClientKeys('rm1')], ['dead/1', 'reaper/2', 1, 'other', '', '', 'rm1']) as Buffer[][])[0].length, 1, 'another claim gets no will');
  });
});
