// Wills at fleet scale: 2,000 clients with retained QoS 1 wills on a node that is SIGKILLed.
// A survivor reaps it in pipelined batches; every will reaches a subscriber on each of the
// two other nodes exactly once, and the retained "down" of every client is then in the
// snapshot a new monitor gets. Raw clients (test/helpers/fleet.ts), not 2,000 mqtt.js objects.
// The kill-to-arrival times are printed, not asserted (bench: will-failover-fleet).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { startNode, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { FleetClient } from '../helpers/fleet.js';

const WILLS = 2000;
const willTopic = (i: number) => `fleet/${i}/state`;
const NODE_TIMEOUT_MS = 4000;

describe(`${WILLS} wills on a SIGKILLed node`, { timeout: 120000 }, () => {
  let redis: TestRedis;
  let victim: VigilNode;
  let s1: VigilNode;
  let s2: VigilNode;
  const opened: FleetClient[] = [];
  before(async () => {
    redis = await startRedis();
    const prefix = randomPrefix('wfleet');
    // the survivors' monitors take 2,000 wills in a burst: a queue that holds the burst
    // (the default 1,000 is for live traffic of one client; docs: README "Wills")
    const env: Record<string, string> = { VIGIL_MAX_QUEUED: String(WILLS * 2) };
    [victim, s1, s2] = await Promise.all(['v', 's1', 's2'].map((nodeId) => startNode({ redisUrl: redis.url, prefix, nodeId, env }, 60000)));
    await waitUntil(async () => (await victim.ready()) && (await s1.ready()) && (await s2.ready()), 10000, 'nodes ready');
  });
  after(async () => {
    for (const c of opened) c.close();
    await Promise.all([victim?.kill('SIGKILL'), s1?.stop(), s2?.stop()]);
    await redis?.stop();
  });

  it('every will reaches a subscriber on each other node exactly once; the retained states follow', async () => {
    const monitors: FleetClient[] = [];
    for (const node of [s1, s2]) {
      const client = await FleetClient.connect(node.port, 5, { clientId: `monitor-${node.nodeId}` });
      opened.push(client);
      await client.subscribe([{ topic: 'fleet/+/state', qos: 1 }]);
      monitors.push(client);
    }

    // 2,000 holders, 100 connecting at a time
    for (let i = 0; i < WILLS; i += 100) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(100, WILLS - i) }, (_, k) =>
          FleetClient.connect(victim.port, (i + k) % 2 ? 5 : 4, {
            clientId: `server-${i + k}`,
            keepalive: 0,
            will: { topic: willTopic(i + k), payload: Buffer.from('down'), qos: 1, retain: true },
          }),
        ),
      );
      opened.push(...batch);
    }
    // the monitors' routes are known on the victim before the kill (a will goes where they are)
    await waitUntil(async () => (await victim.metric('vigil_connections_current')) >= WILLS, 20000, 'every holder connected');
    assert.equal(monitors.reduce((n, m) => n + m.publishes, 0), 0, 'no will before the kill');

    const killedAt = Date.now();
    await victim.kill('SIGKILL');
    try {
      for (const m of monitors) await m.topics(WILLS, 60000);
    } catch (err) {
      // what the survivors said (a lost lease shows here)
      for (const n of [s1, s2]) console.error(n.nodeId, JSON.stringify(n.logs.filter((l) => !/will published/.test(String(l.msg))).slice(-15)));
      throw err;
    }
    await new Promise((r) => setTimeout(r, 500)); // room for a second copy to show up

    for (const [k, m] of monitors.entries()) {
      assert.equal(m.byTopic.size, WILLS, `monitor ${k}: every will`);
      for (let i = 0; i < WILLS; i++) {
        const got = m.byTopic.get(willTopic(i))!;
        assert.equal(got.length, 1, `monitor ${k}: ${willTopic(i)} once`);
        assert.equal(got[0].payload, 'down');
      }
      const times = [...m.byTopic.values()].map(([g]) => g.at - killedAt).sort((a, b) => a - b);
      console.log(`# monitor ${k}: ${WILLS} wills, kill to arrival p50 ${times[Math.floor(times.length / 2)]} ms, p99 ${times[Math.ceil(times.length * 0.99) - 1]} ms (node timeout ${NODE_TIMEOUT_MS} ms)`);
    }
    assert.equal((await s1.metric('vigil_wills_fired_total')) + (await s2.metric('vigil_wills_fired_total')), WILLS);

    // a monitor that comes later learns the state of the whole fleet from the retained wills
    const late = await FleetClient.connect(s2.port, 5, { clientId: 'late-monitor' });
    opened.push(late);
    await waitUntil(async () => (await s2.metric('vigil_retained_messages')) === WILLS, 20000, 'every retained will mirrored');
    await late.subscribe([{ topic: 'fleet/+/state', qos: 1 }]);
    await late.topics(WILLS, 60000);
    assert.ok([...late.byTopic.values()].every((g) => g.length === 1 && g[0].payload === 'down' && g[0].retain));
  });
});
