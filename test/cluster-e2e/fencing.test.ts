// Retained fencing across a node crash (three Vigil processes on one real Redis): client C
// keeps "up" retained on state/C with a retained will "down"; its node A is SIGKILLed, C
// reconnects at once to node B and publishes "up" again. Once the reaper has run, state/C
// must read "up" — and, by the fencing rule of docs/cluster.md, a will of the crashed
// incarnation (an older epoch of the same client) can never overwrite it.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { startNode, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { ClientPool, sleep } from '../helpers/mqtt.js';
import { ClusterKeys } from '../../src/cluster/keys.js';
import { VigilRedis } from '../../src/redis/connection.js';
import { RedisRetainedStore } from '../../src/store/redis/retained.js';
import { RetainedFencedError } from '../../src/store/errors.js';
import { createMetrics } from '../../src/metrics.js';

const NODE_TIMEOUT_MS = 1500;

let redis: TestRedis;
let a: VigilNode;
let b: VigilNode;
let c: VigilNode;
let keys: ClusterKeys;
const clients = new ClientPool();

before(async () => {
  redis = await startRedis();
  const prefix = randomPrefix('fe');
  keys = new ClusterKeys(prefix);
  [a, b, c] = await Promise.all(['a', 'b', 'c'].map((nodeId) => startNode({ redisUrl: redis.url, prefix, nodeId })));
  await waitUntil(async () => (await a.ready()) && (await b.ready()) && (await c.ready()), 5000, 'nodes ready');
});
after(async () => {
  await clients.closeAll();
  await Promise.all([a?.kill('SIGKILL'), b?.stop(), c?.stop()]);
  await redis?.stop();
});

describe('retained fencing across a crash', () => {
  test('the new incarnation\'s retained "up" survives the crashed incarnation\'s will "down"', async () => {
    const probe = redis.client();
    const epochOf = async () => Number(await probe.hget(keys.clientOwner('C'), 'epoch'));
    const t0 = Date.now();
    const timeline: string[] = [];
    const mark = (what: string) => timeline.push(`${String(Date.now() - t0).padStart(5)} ms  ${what}`);

    const observer = await clients.connect(c.url, { protocolVersion: 5, clientId: 'fe-observer' });
    observer.mqtt.on('message', (_t, payload, packet) => mark(`observer on C got "${payload}"${packet.retain ? ' (retained)' : ''}`));
    await observer.mqtt.subscribeAsync('state/C', { qos: 1 });

    const will = { topic: 'state/C', payload: Buffer.from('down'), qos: 1 as const, retain: true, properties: { willDelayInterval: 0 } };
    const first = await clients.connect(a.url, { protocolVersion: 5, clientId: 'C', will });
    await first.mqtt.publishAsync('state/C', 'up', { qos: 1, retain: true });
    const oldEpoch = await epochOf();
    mark(`C connected on A (epoch ${oldEpoch}), retained "up" published`);

    const killedAt = Date.now();
    await a.kill('SIGKILL');
    mark('node A SIGKILLed');
    const second = await clients.connect(b.url, { protocolVersion: 5, clientId: 'C', will });
    const newEpoch = await epochOf();
    mark(`C reconnected on B (epoch ${newEpoch})`);
    await second.mqtt.publishAsync('state/C', 'up', { qos: 1, retain: true });
    mark('C published retained "up" again');
    assert.ok(newEpoch > oldEpoch, 'the reconnect is a newer incarnation');

    await waitUntil(() => b.logs.some((l) => l.msg === 'dead node reaped') || c.logs.some((l) => l.msg === 'dead node reaped'), NODE_TIMEOUT_MS + 3000, 'the reaper');
    mark(`node A reaped (${b.logs.some((l) => l.msg === 'dead node reaped') ? 'by B' : 'by C'})`);
    await sleep(Math.max(0, NODE_TIMEOUT_MS + 1200 - (Date.now() - killedAt)));

    for (const node of [b, c]) {
      const late = await clients.connect(node.url, { protocolVersion: 5, clientId: `fe-late-${node.nodeId}` });
      await late.mqtt.subscribeAsync('state/C', { qos: 1 });
      const [m] = await late.waitForMessages(1, 3000);
      mark(`new subscriber on ${node.nodeId.toUpperCase()} got retained "${m.payload}"`);
      assert.equal(m.payload, 'up', `node ${node.nodeId}: retained state/C after the reaper`);
    }

    // The rule itself: the crashed incarnation's will, written late with its own (older)
    // epoch, is refused; the newer incarnation's message stays.
    const vr = new VigilRedis({ target: { url: redis.url } });
    const metrics = createMetrics('fencing', { processMetrics: false });
    const store = new RedisRetainedStore({ redis: vr, keys, metrics });
    try {
      const lateWill = { topic: 'state/C', payload: Buffer.from('down'), qos: 1 as const, retain: true, origin: 'C' };
      await assert.rejects(store.trySet(lateWill, oldEpoch), RetainedFencedError, 'a will of epoch ' + oldEpoch + ' after epoch ' + newEpoch + ' wrote');
      mark(`late will "down" of epoch ${oldEpoch} replayed against Redis: fenced`);
      // the broker's write (set, not awaited by it) takes the fence as an outcome: counted, no throw
      await store.set(lateWill, oldEpoch);
      const dropped = (await metrics.messagesDroppedTotal.get()).values.find((v) => v.labels.reason === 'retained_fenced');
      assert.equal(dropped?.value, 1, 'a fenced write is counted as dropped (retained_fenced)');
      await store.trySet({ ...lateWill, origin: 'someone-else' }, 1); // the fence belongs to C only: applied
      await store.trySet({ ...lateWill, payload: Buffer.from('up'), origin: 'C' }, newEpoch);
    } finally {
      await vr.close();
    }
    const check = await clients.connect(c.url, { protocolVersion: 5, clientId: 'fe-check' });
    await check.mqtt.subscribeAsync('state/C', { qos: 1 });
    assert.equal((await check.waitForMessages(1, 3000))[0].payload, 'up');

    console.log(`fencing timeline:\n${timeline.join('\n')}`);
    const livePayloads = observer.messages.map((m) => m.payload);
    assert.equal(livePayloads[livePayloads.length - 1], 'up', `the observer's last message is "up" (${livePayloads.join(', ')})`);
  });
});
