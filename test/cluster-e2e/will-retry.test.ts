// A will whose copy for another node cannot be stored when it fires is routed again until it
// is, and the node goes on. Two Vigil processes on one real Redis; a monitor on node B
// subscribes at QoS 1; node B is stopped (SIGSTOP) and its bus stream deleted, so node A's
// forward of a will finds no stream (as while Redis fails over, or routes resync after a
// reconnect). Before the fix the rejection went unhandled and Node ended node A, the will
// with it; a reaper firing a dead node's wills during a Sentinel failover died the same way
// (cluster-e2e/sentinel-failover, 3 of ~180 runs). Node B is resumed before its lease could
// lapse (node timeout 10 s): its stream is made again and the monitor gets the will once.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { busStreamKey, startNode, untilRouted, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { ClientPool } from '../helpers/mqtt.js';

let redis: TestRedis;
let a: VigilNode;
let b: VigilNode;
let prefix: string;
let stopped: number | undefined;
const clients = new ClientPool();
const env = { VIGIL_NODE_TIMEOUT_MS: '10000', VIGIL_HEARTBEAT_MS: '1000' };

before(async () => {
  redis = await startRedis();
  prefix = randomPrefix('wr');
  [a, b] = await Promise.all(['a', 'b'].map((nodeId) => startNode({ redisUrl: redis.url, prefix, nodeId, env })));
  await waitUntil(async () => (await a.ready()) && (await b.ready()), 10_000, 'nodes ready');
});
after(async () => {
  if (stopped !== undefined) process.kill(stopped, 'SIGCONT');
  await clients.closeAll();
  await Promise.all([a?.stop(), b?.stop()]);
  await redis?.stop();
});

describe('a will whose copy for another node is not stored', () => {
  test('is routed again until it is: the monitor on the other node gets it once, and the node that fired it goes on', async () => {
    try {
      await run();
    } catch (err) {
      // a node that ended says why on stderr (an unhandled rejection, before the fix)
      for (const n of [a, b]) {
        const exit = n.exit();
        if (exit) process.stdout.write(`# node ${n.nodeId} exited (code ${exit.code}, signal ${exit.signal}):\n${exit.stderrTail.split('\n').map((l) => `#   ${l}`).join('\n')}\n`);
      }
      throw err;
    }
  });
});

async function run(): Promise<void> {
  {
    const monitor = await clients.connect(b.url, { clientId: 'wr-monitor', protocolVersion: 5 });
    await monitor.mqtt.subscribeAsync('fleet/+/state', { qos: 1 });
    // node A knows the monitor's route once a QoS 1 publish from A reaches it
    const probe = await clients.connect(a.url, { clientId: 'wr-probe', protocolVersion: 5 });
    await untilRouted(probe, monitor, 'fleet/probe/state', 'node A routes to the monitor on node B');

    const device = await clients.connect(a.url, { clientId: 'wr-device', protocolVersion: 5, will: { topic: 'fleet/wr-device/state', payload: Buffer.from('down'), qos: 1, retain: false } });

    // node B frozen with its bus stream gone: node A's forward of the will finds no stream
    const redisClient = redis.client();
    const busKey = await busStreamKey(redisClient, prefix, 'b');
    process.kill(b.pid, 'SIGSTOP');
    stopped = b.pid;
    assert.equal(await redisClient.del(busKey), 1, "node B's bus stream deleted");

    device.mqtt.stream.destroy(); // the connection ends without DISCONNECT: the will fires on node A
    await waitUntil(() => a.logs.some((l) => l.msg === 'will not stored for every subscriber; routing it again'), 10_000, 'node A routes the will again');
    assert.equal(a.exit(), undefined, 'node A is still running');

    process.kill(b.pid, 'SIGCONT');
    stopped = undefined;
    await waitUntil(() => monitor.messages.some((m) => m.topic === 'fleet/wr-device/state'), 20_000, 'the will at the monitor');
    await waitUntil(() => a.logs.some((l) => l.msg === 'will stored after being routed again'), 10_000, 'node A saw the will stored');
    // a probe published after the will has arrived after it: a second copy of the will would have come first
    await probe.mqtt.publishAsync('fleet/probe/state', 'after', { qos: 1 });
    await waitUntil(() => monitor.messages.some((m) => m.payload === 'after'), 10_000, 'the probe after the will');
    assert.deepEqual(monitor.messages.filter((m) => m.topic === 'fleet/wr-device/state').map((m) => m.payload), ['down'], 'the will once');
    assert.equal(a.exit(), undefined, 'node A is still running');
    assert.ok(!a.logs.some((l) => l.msg === 'unhandled promise rejection (a bug); going on'), 'no rejection went unhandled');
    assert.equal(await a.metric('vigil_unhandled_errors_total', { kind: 'unhandled_rejection' }), 0);
    assert.ok((await a.metric('vigil_will_retries_total')) >= 1, 'counted');
    redisClient.disconnect();
  }
}
