// A cluster node claims the CONNECTs of one round trip in one Redis call, and ownership holds
// inside a batch: one Vigil process on a real Redis; while Redis is paused, 40 CONNECTs arrive
// (20 client ids, each twice, from raw sockets) and wait together. Once Redis answers again
// they take a handful of claim calls (vigil_redis_command_seconds, script:claimClient), and of
// each pair exactly one connection stays: the client id's newest incarnation, online in Redis
// (and, for persistent sessions, the one whose session is stored).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { IConnackPacket, IConnectPacket } from 'mqtt-packet';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { startNode, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { RawClient } from '../helpers/raw-client.js';
import { ClusterKeys } from '../../src/cluster/keys.js';
import { RedisSessionStore } from '../../src/store/redis/sessions.js';
import { Closer } from '../cluster/support.js';

let redis: TestRedis;
let node: VigilNode;
let prefix: string;
const raw: RawClient[] = [];
const closer = new Closer();

before(async () => {
  redis = await startRedis();
  prefix = randomPrefix('cb');
  // a lease that outlasts the pause below: the node stays a cluster owner throughout
  node = await startNode({ redisUrl: redis.url, prefix, nodeId: 'cb', env: { VIGIL_NODE_TIMEOUT_MS: '20000', VIGIL_HEARTBEAT_MS: '1000' } });
  await waitUntil(() => node.ready(), 15000, 'node ready');
});
after(async () => {
  for (const c of raw) c.close();
  await closer.closeAll();
  await node?.stop();
  await redis?.stop();
});

const claimCalls = () => node.metric('vigil_redis_command_seconds_count', { command: 'script:claimClient' });

/**
 * While Redis is paused, 40 CONNECTs (20 client ids, each twice) arrive and wait together; once
 * it answers, every one is decided. Returns the claim calls they took.
 */
async function pairsAtOnce(name: string, connect: Partial<IConnectPacket>): Promise<{ ids: string[]; calls: number }> {
  const before = await claimCalls();
  const ids = Array.from({ length: 20 }, (_, i) => `${name}-${i}`);
  const pairs = await Promise.all(ids.map(async () => [await RawClient.open(node.port, 5), await RawClient.open(node.port, 5)] as const));
  raw.push(...pairs.flat());
  await redis.pause(1500);
  for (const [i, pair] of pairs.entries()) {
    for (const c of pair) c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: ids[i], keepalive: 0, ...connect } as IConnectPacket);
  }
  // every CONNECT is decided: accepted, or refused / closed (taken over by the other of its pair)
  const accepted = (c: RawClient) => c.received.some((p) => p.cmd === 'connack' && (p as IConnackPacket).reasonCode === 0);
  const settled = (c: RawClient) => c.closed || accepted(c);
  await waitUntil(() => pairs.every(([x, y]) => settled(x) && settled(y) && (x.closed || y.closed)), 30000, 'each pair settled');
  for (const [i, [x, y]] of pairs.entries()) {
    const open = [x, y].filter((c) => !c.closed);
    assert.equal(open.length, 1, `${ids[i]}: exactly one connection stays`);
    assert.ok(accepted(open[0]), `${ids[i]}: the one that stays got CONNACK 0`);
  }
  const r = redis.client();
  const keys = new ClusterKeys(prefix);
  for (const id of ids) {
    const owner = await r.hgetall(keys.clientOwner(id));
    assert.deepEqual([owner.epoch, owner.online], ['2', '1'], `${id}: the second incarnation owns it, online`);
  }
  return { ids, calls: (await claimCalls()) - before };
}

test('40 CONNECTs of one round trip: a few claim calls; the same client id twice: exactly one connection stays', { timeout: 60000 }, async () => {
  (await RawClient.connect(node.port, 5, { clientId: 'cb-warm' })).client.close(); // the script is loaded
  const { calls } = await pairsAtOnce('cb', {});
  assert.ok(calls >= 1 && calls <= 10, `40 CONNECTs took ${calls} claim calls`);
});

test('the same with persistent sessions: one connection per client id, its session stored once', { timeout: 60000 }, async () => {
  const { ids } = await pairsAtOnce('cbp', { clean: false, properties: { sessionExpiryInterval: 300 } });
  const sessions = new RedisSessionStore({ redis: closer.redis({ url: redis.url }), keys: new ClusterKeys(prefix) });
  for (const id of ids) assert.equal((await sessions.load(id))?.epoch, 2, `${id}: the stored session is the second incarnation's`);
});
