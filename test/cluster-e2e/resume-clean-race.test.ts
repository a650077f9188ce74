// A resume and a Clean Start of the same client id in one claim batch (cluster e2e, real
// processes): the resume's claim loads the stored session (claim-client.lua), the Clean Start
// claimed right after it ends that session in the same call, and the resume, superseded, must
// not write the old session back. Otherwise the session the Clean Start discarded
// [MQTT-3.1.2-4] lives on in Redis with no time to live, and a later persistent CONNECT
// resumes it (session present, the old pending message delivered again). The same when the
// reconnect lands on the node holding the session's offline copy (no resume in the claim: the
// claim marks the stored session, and the copy's save after it finds the mark gone).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { IConnackPacket, IConnectPacket, IPublishPacket } from 'mqtt-packet';
import { randomPrefix, startRedis, type TestRedis } from '../helpers/redis.js';
import { startNode, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { RawClient } from '../helpers/raw-client.js';
import { sleep } from '../helpers/mqtt.js';
import { ClusterKeys } from '../../src/cluster/keys.js';

describe('cluster: resume and Clean Start of one client id in one claim batch', { timeout: 90_000 }, () => {
  let redis: TestRedis;
  const nodes: VigilNode[] = [];
  const raws: RawClient[] = [];
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    for (const r of raws) r.close();
    for (const n of nodes) await n.stop();
    await redis.stop();
  });

  const connect = (clientId: string, clean: boolean, expiryS: number): IConnectPacket =>
    ({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean, clientId, keepalive: 0, properties: { sessionExpiryInterval: expiryS } }) as IConnectPacket;

  // where the session is first stored: on A (B resumes it inside its claim), or on B itself
  // (B holds the offline copy and saves it whole after the claim); the case of B found by review
  for (const [where, what] of [['a', 'resume'], ['b', 'reconnect (local copy)']] as const) {
    it(`the session the Clean Start ended is not written back by the superseded ${what}`, async () => {
      const prefix = randomPrefix(`rcr${where}`);
      const keys = new ClusterKeys(prefix);
      // a long node timeout: the Redis pause below must not make a lease lapse
      const env = { VIGIL_NODE_TIMEOUT_MS: '15000' };
      const a = await startNode({ redisUrl: redis.url, prefix, nodeId: 'rcr-a', env });
      nodes.push(a);
      const b = await startNode({ redisUrl: redis.url, prefix, nodeId: 'rcr-b', env });
      nodes.push(b);
      const r = redis.client();

      // a persistent session on A, offline, with a subscription and a QoS 1 message pending (in Redis)
      const home = where === 'a' ? a : b;
      const { client: first } = await RawClient.connect(home.port, 5, connect('rc', false, 300));
      raws.push(first);
      first.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'rc/t', qos: 1 }] });
      await first.next('suback');
      first.send({ cmd: 'disconnect' });
      await first.waitForClose();
      const { client: pub } = await RawClient.connect(home.port, 5, connect('rc-pub', true, 0));
      raws.push(pub);
      pub.send({ cmd: 'publish', topic: 'rc/t', payload: Buffer.from('old'), qos: 1, messageId: 1, retain: false, dup: false } as IPublishPacket);
      await pub.next('puback');
      await waitUntil(async () => (await r.hlen(keys.sessionPending('rc'))) === 1, 20_000, 'the pending message stored');

      // Redis stops answering for a moment: B's first claim (the blocker's) waits in Redis, and the
      // two CONNECTs of "rc" that reach B meanwhile go in its next claim call, the resume first.
      // (The short waits below only order the two CONNECTs; if they missed the batch, the race did
      // not happen and the test passes without showing anything.)
      const [blk, x1, x2] = await Promise.all([RawClient.open(b.port, 5), RawClient.open(b.port, 5), RawClient.open(b.port, 5)]);
      raws.push(blk, x1, x2);
      await redis.pause(1500);
      blk.send(connect('rc-blk', true, 0));
      await sleep(200);
      x1.send(connect('rc', false, 300)); // from A: B holds no copy, a resume inside the claim; from B: a save of B's copy after the claim
      await sleep(200);
      x2.send(connect('rc', true, 0)); // Clean Start, no session kept
      const c2 = (await x2.next('connack', 20_000)) as IConnackPacket;
      assert.equal(c2.reasonCode, 0, 'the Clean Start is accepted');
      assert.equal(c2.sessionPresent, false, '[MQTT-3.2.2-2] Clean Start: no session present');
      const c1 = (await x1.next('connack', 20_000)) as IConnackPacket;
      assert.equal(c1.reasonCode, 0x80, 'the earlier CONNECT, taken over before its CONNACK, is refused (as connect-batch shows)');
      await blk.next('connack', 20_000);

      // the refused resume has answered (after its save): no stored session of "rc" is left
      assert.equal(await r.exists(keys.session('rc')), 0, 'the session the Clean Start ended stays ended');
      assert.equal(await r.hlen(keys.sessionPending('rc')), 0, 'its pending message too');

      // and a later persistent CONNECT starts a new session: nothing of the ended one comes back
      x2.send({ cmd: 'disconnect' });
      await x2.waitForClose();
      await waitUntil(async () => (await r.hget(keys.clientOwner('rc'), 'online')) === '0', 20_000, 'the disconnect recorded');
      const { client: x3, connack: c3 } = await RawClient.connect(b.port, 5, connect('rc', false, 300));
      raws.push(x3);
      assert.equal(c3.sessionPresent, false, '[MQTT-3.2.2-3] the ended session is not resumed');
      // a probe through the same node: anything of the old session would have been sent before it
      x3.send({ cmd: 'subscribe', messageId: 2, subscriptions: [{ topic: 'rc/probe', qos: 1 }] });
      await x3.next('suback');
      const { client: pub2 } = await RawClient.connect(b.port, 5, connect('rc-pub2', true, 0));
      raws.push(pub2);
      pub2.send({ cmd: 'publish', topic: 'rc/probe', payload: Buffer.from('probe'), qos: 1, messageId: 1, retain: false, dup: false } as IPublishPacket);
      const probe = (await x3.next('publish', 20_000)) as IPublishPacket;
      assert.equal(probe.topic, 'rc/probe', 'the old pending message is not delivered to the new session');
    });
  }
});
