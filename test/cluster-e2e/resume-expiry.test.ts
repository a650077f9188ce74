// MQTT 5 session expiry across a resume on another node (cluster e2e, real processes): the
// Session Expiry Interval of the reconnecting CONNECT replaces the stored one (MQTT 5 3.1.2.11).
// A persistent session stored by node A with expiry 300 s is resumed on node B (inside the
// claim: claim-client.lua) with a shorter expiry, then ends that much after B's disconnect; one
// resumed on B with expiry 0 is present and delivers what was pending, and is deleted at its
// disconnect.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { IConnectPacket, IPublishPacket } from 'mqtt-packet';
import { randomPrefix, startRedis, type TestRedis } from '../helpers/redis.js';
import { startNode, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { RawClient } from '../helpers/raw-client.js';
import { ClusterKeys } from '../../src/cluster/keys.js';

describe('cluster: session expiry of a session resumed on another node', { timeout: 90_000 }, () => {
  let redis: TestRedis;
  let a: VigilNode;
  let b: VigilNode;
  let keys: ClusterKeys;
  const raws: RawClient[] = [];
  before(async () => {
    redis = await startRedis();
    const prefix = randomPrefix('rex');
    keys = new ClusterKeys(prefix);
    [a, b] = await Promise.all([startNode({ redisUrl: redis.url, prefix, nodeId: 'rex-a' }), startNode({ redisUrl: redis.url, prefix, nodeId: 'rex-b' })]);
  });
  after(async () => {
    for (const r of raws) r.close();
    await Promise.all([a?.stop(), b?.stop()]);
    await redis?.stop();
  });

  const connect = (clientId: string, clean: boolean, expiryS: number): IConnectPacket =>
    ({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean, clientId, keepalive: 0, properties: { sessionExpiryInterval: expiryS } }) as IConnectPacket;
  const open = async (n: VigilNode, id: string, clean: boolean, expiryS: number) => {
    const c = await RawClient.connect(n.port, 5, connect(id, clean, expiryS));
    raws.push(c.client);
    return c;
  };

  /** A session of `id` stored by node A (expiry 300 s), offline, with a subscription and (`pending`) one QoS 1 message pending in Redis. */
  async function storedOnA(id: string, pending: boolean): Promise<void> {
    const { client } = await open(a, id, false, 300);
    client.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `${id}/t`, qos: 1 }] });
    await client.next('suback');
    client.send({ cmd: 'disconnect' });
    await client.waitForClose();
    if (!pending) return;
    const { client: pub } = await open(a, `${id}-pub`, true, 0);
    pub.send({ cmd: 'publish', topic: `${id}/t`, payload: Buffer.from('queued'), qos: 1, messageId: 1, retain: false, dup: false } as IPublishPacket);
    await pub.next('puback');
    await waitUntil(async () => (await probe().hlen(keys.sessionPending(id))) === 1, 20_000, `${id}: the pending message stored`);
  }
  let client: ReturnType<TestRedis['client']> | undefined;
  const probe = () => (client ??= redis.client());

  it('a shorter expiry on the resuming CONNECT replaces the stored one: the session ends that long after the disconnect', async () => {
    // nothing pending: the claim alone stores the resumed session (no save after it)
    await storedOnA('rex-short', false);
    const { client: c, connack } = await open(b, 'rex-short', false, 2);
    assert.equal(connack.sessionPresent, true, '[MQTT-3.2.2-3] the stored session is resumed');
    assert.equal(await probe().hget(keys.session('rex-short'), 'expiryS'), '2', 'the new expiry stored');
    // its subscription is back, on B
    const { client: pub } = await open(b, 'rex-short-pub', true, 0);
    pub.send({ cmd: 'publish', topic: 'rex-short/t', payload: Buffer.from('after'), qos: 1, messageId: 1, retain: false, dup: false } as IPublishPacket);
    const got = (await c.next('publish', 20_000)) as IPublishPacket;
    assert.equal(got.payload.toString(), 'after');
    c.send({ cmd: 'puback', messageId: got.messageId! });
    c.send({ cmd: 'disconnect' });
    await c.waitForClose();
    await waitUntil(async () => (await probe().pttl(keys.session('rex-short'))) > 0, 20_000, 'a time to live set at the disconnect');
    assert.ok((await probe().pttl(keys.session('rex-short'))) <= 2000, 'the new expiry, not the stored 300 s');
    await waitUntil(async () => (await probe().exists(keys.session('rex-short'))) === 0, 20_000, 'the session expired in Redis');
    // and on node B, whose copy its once-a-second sweep ends
    await waitUntil(async () => (await b.metric('vigil_sessions_expired_total')) === 1, 20_000, 'the session expired on node B');
    const { connack: again } = await open(b, 'rex-short', false, 300);
    assert.equal(again.sessionPresent, false, 'the expired session is not resumed');
  });

  it('expiry 0 on the resuming CONNECT: the session is present, its pending message delivered, and it ends at the disconnect', async () => {
    await storedOnA('rex-zero', true);
    const { client: c, connack } = await open(b, 'rex-zero', false, 0);
    assert.equal(connack.sessionPresent, true);
    const got = (await c.next('publish', 20_000)) as IPublishPacket;
    assert.equal(got.payload.toString(), 'queued');
    c.send({ cmd: 'puback', messageId: got.messageId! });
    c.send({ cmd: 'disconnect' });
    await c.waitForClose();
    await waitUntil(async () => (await probe().exists(keys.session('rex-zero'))) === 0, 20_000, 'no session kept after a connection with expiry 0');
    const { connack: again } = await open(a, 'rex-zero', false, 300);
    assert.equal(again.sessionPresent, false, 'nothing to resume on either node');
  });

  it('expiry 0 on a reconnect to the node holding the offline copy: the stored session ends with that connection too', async () => {
    const { client: first } = await open(b, 'rex-copy', false, 300);
    first.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'rex-copy/t', qos: 1 }] });
    await first.next('suback');
    first.send({ cmd: 'disconnect' });
    await first.waitForClose();
    await waitUntil(async () => (await probe().pttl(keys.session('rex-copy'))) > 0, 20_000, 'the session stored, offline');
    const { client: c, connack } = await open(b, 'rex-copy', false, 0);
    assert.equal(connack.sessionPresent, true, 'B resumes its copy');
    c.send({ cmd: 'disconnect' });
    await c.waitForClose();
    await waitUntil(async () => (await probe().hget(keys.clientOwner('rex-copy'), 'online')) === '0', 20_000, 'the disconnect recorded');
    assert.equal(await probe().exists(keys.session('rex-copy')), 0, 'no stored session left for another node to resume');
    const { connack: elsewhere } = await open(a, 'rex-copy', false, 300);
    assert.equal(elsewhere.sessionPresent, false, 'the session ended with the expiry-0 connection');
  });
});
