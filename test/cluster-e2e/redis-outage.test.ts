// A Redis outage under QoS 1 traffic (two Vigil processes on one real Redis): a publisher on
// node A, a persistent subscriber on node B; redis-server is SIGKILLed, stays down 5 s and is
// started again on its data (AOF, fsync on every write, so Redis itself loses nothing it
// acknowledged). No node process exits; /readyz is false during the outage and true after;
// CONNECTs during the outage are refused (5.0 0x88, 3.1.1 0x03) or time out; and every
// message whose PUBACK the publisher got is at the subscriber at the end.
//
// Messages published while the subscriber is away reach it through its persistent session:
// a node that loses its lease keeps its sessions (offline, still routed to) and, once the
// lease is back, keeps those no reaper took (saving them whole: writes failed meanwhile); a
// reaper adopts the others with what was left in the dead member's bus stream; and the
// subscriber's new node fences the stored session before loading it.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { startNode, waitForRoutes, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { ClientPool, sleep, withTimeout, type TestClient } from '../helpers/mqtt.js';

const OUTAGE_MS = 5000;

let redis: TestRedis;
let a: VigilNode;
let b: VigilNode;
const clients = new ClientPool();
/** Acknowledged messages that never reached the subscriber, split by when they were published. */
const lost = { whileAttached: [] as string[], whileDetached: [] as string[], ran: false };

before(async () => {
  redis = await startRedis({ appendonly: true });
  const setup = redis.client();
  await setup.config('SET', 'appendfsync', 'always');
  setup.disconnect();
  const prefix = randomPrefix('ro');
  [a, b] = await Promise.all([startNode({ redisUrl: redis.url, prefix, nodeId: 'a' }), startNode({ redisUrl: redis.url, prefix, nodeId: 'b' })]);
  await waitUntil(async () => (await a.ready()) && (await b.ready()), 5000, 'nodes ready');
});
after(async () => {
  await clients.closeAll();
  await Promise.all([a?.stop(), b?.stop()]);
  await redis?.stop();
});

const alive = (node: VigilNode) => {
  try {
    process.kill(node.pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('Redis outage', () => {
  test(`Redis down for ${OUTAGE_MS / 1000} s under QoS 1 traffic: nodes survive, readiness follows Redis, CONNECTs are refused meanwhile, no acknowledged message published while the subscriber was connected is lost`, async () => {
    const t0 = Date.now();
    const timeline: string[] = [];
    const mark = (what: string) => timeline.push(`${String(Date.now() - t0).padStart(6)} ms  ${what}`);

    // the subscriber: a persistent 5.0 session on B, reconnecting to B whenever it is closed
    // every connection's messages, as its client recorded them from the first packet on (a
    // listener added after connect() resolves would miss what arrives with the CONNACK)
    const subscriberConnections: TestClient[] = [];
    const received: string[] = [];
    const collect = () => {
      received.length = 0;
      for (const c of subscriberConnections) for (const m of c.messages) if (m.topic === 'ro/t') received.push(m.payload);
    };
    const subOptions = { protocolVersion: 5 as const, clientId: 'ro-sub', clean: false, properties: { sessionExpiryInterval: 300 } };
    let sub = await clients.connect(b.url, subOptions);
    subscriberConnections.push(sub);
    await sub.mqtt.subscribeAsync('ro/#', { qos: 1 });
    // publishing starts once A routes to the subscriber (a probe from A arrives)
    const routesFromA = async () => {
      const probe = await clients.connect(a.url, { protocolVersion: 5, clientId: `ro-probe-${subConnects}` }, 5000);
      await waitForRoutes(probe, sub);
      probe.mqtt.end(true);
    };
    let subConnects = 1;
    await routesFromA();
    let running = true;
    // the subscriber stays away until publishing has resumed after the outage
    let subMayReconnect = false;
    // [closed, resumed] intervals of the subscriber's connection
    const detached: [number, number][] = [];
    const subscriberLoop = (async () => {
      while (running) {
        await sub.waitForClose(1_000_000).catch(() => undefined);
        if (!running) return;
        detached.push([Date.now(), Infinity]);
        while (running && !subMayReconnect) await sleep(50);
        for (;;) {
          if (!running) return;
          try {
            sub = await clients.connect(b.url, subOptions, 1000);
            subscriberConnections.push(sub);
            subConnects++;
            mark(`subscriber reconnected to B (session present: ${sub.connack.sessionPresent})`);
            break;
          } catch {
            await sleep(200);
          }
        }
        // away until its route reaches A again: what A acknowledges from then on must arrive
        while (running) {
          try {
            await routesFromA();
            break;
          } catch {
            await sleep(200);
          }
        }
        detached[detached.length - 1][1] = Date.now();
        mark('A routes to the subscriber again');
      }
    })();

    // the publisher: QoS 1 on A, one at a time; only PUBACKed messages are counted
    const acked: string[] = [];
    const ackedAt = new Map<string, number>();
    let unconfirmed = 0;
    let pubConnects = 0;
    const publisherLoop = (async () => {
      let pub: TestClient | undefined;
      for (let i = 0; running; i++) {
        if (!pub) {
          try {
            pub = await clients.connect(a.url, { protocolVersion: 5, clientId: 'ro-pub' }, 1000);
            pubConnects++;
          } catch {
            await sleep(200);
            i--;
            continue;
          }
        }
        try {
          await withTimeout(pub.mqtt.publishAsync('ro/t', `p${i}`, { qos: 1 }), 2000, 'PUBACK');
          acked.push(`p${i}`);
          ackedAt.set(`p${i}`, Date.now());
        } catch {
          unconfirmed++;
          pub.mqtt.end(true);
          pub = undefined;
        }
        await sleep(10);
      }
      pub?.mqtt.end(true);
    })();

    await waitUntil(() => acked.length >= 50, 10_000, 'traffic before the outage');
    const ackedBefore = acked.length;
    mark(`${ackedBefore} messages acknowledged before the outage`);

    await redis.kill();
    const downAt = Date.now();
    mark('redis-server SIGKILLed');
    await waitUntil(async () => !(await a.ready()) && !(await b.ready()), 4000, '/readyz false on both nodes');
    mark('/readyz false on A and B');

    // new CONNECTs while Redis is down (at once, and after the nodes gave up their leases):
    // refused with "server unavailable", or no answer
    const refusals: string[] = [];
    for (const [version, expected, atMs] of [[5, 0x88, 0], [4, 0x03, 0], [5, 0x88, 2500], [4, 0x03, 2500]] as const) {
      await sleep(Math.max(0, atMs - (Date.now() - downAt)));
      try {
        const err = await clients.connectRefused(a.url, { protocolVersion: version, clientId: `ro-new-${version}-${atMs}` }, 2000);
        const code = err.code;
        refusals.push(`${version === 5 ? '5.0' : '3.1.1'} at +${Date.now() - downAt} ms: ${code === undefined ? err.message : `0x${code.toString(16)}`}`);
        if (code !== undefined) assert.equal(code, expected, `${version === 5 ? '5.0' : '3.1.1'} CONNECT during the outage`);
        else assert.match(err.message, /no CONNACK/);
      } catch (err) {
        assert.fail(`a ${version === 5 ? '5.0' : '3.1.1'} CONNECT was accepted during the outage: ${(err as Error).message}`);
      }
    }
    mark(`CONNECTs during the outage: ${refusals.join(', ')}`);

    await sleep(Math.max(0, OUTAGE_MS - (Date.now() - downAt)));
    assert.ok(alive(a) && alive(b), 'both node processes survive the outage');
    const ackedDuring = acked.length;
    await redis.restart();
    mark('redis-server restarted');
    await waitUntil(async () => (await a.ready()) && (await b.ready()), 10000, '/readyz true again on both nodes');
    mark('/readyz true on A and B');

    await waitUntil(() => acked.length >= ackedDuring + 50, 10000, 'publishing to resume after the outage');
    mark(`publishing resumed (${acked.length} acknowledged)`);
    subMayReconnect = true;
    await waitUntil(() => subConnects > 1 && detached.every(([, to]) => to !== Infinity), 30_000, 'the subscriber to come back and A to route to it');
    const ackedBack = acked.length;
    await waitUntil(() => acked.length >= ackedBack + 50, 10_000, 'publishing with the subscriber back');
    running = false;
    await publisherLoop;
    mark(`publisher stopped: ${acked.length} acknowledged, ${unconfirmed} without PUBACK`);

    const missing = () => {
      collect();
      return acked.filter((p) => !received.includes(p));
    };
    await waitUntil(() => missing().length === 0, 5000, 'every acknowledged message at the subscriber').catch(() => undefined);
    const distinct = new Set(received);
    mark(`subscriber: ${received.length} received, ${distinct.size} distinct, ${received.length - distinct.size} duplicates, ${missing().length} acknowledged missing; ${subConnects} subscriber / ${pubConnects} publisher connections`);
    console.log(`redis outage timeline:\n${timeline.join('\n')}`);
    if (process.env.VIGIL_TEST_NODE_LOGS) {
      const { writeFileSync } = await import('node:fs');
      writeFileSync(process.env.VIGIL_TEST_NODE_LOGS, [a, b].map((n) => n.logs.map((l) => JSON.stringify({ n: n.nodeId, ...l })).join('\n')).join('\n'));
    }
    sub.mqtt.end(true);
    await subscriberLoop;

    assert.ok(alive(a) && alive(b), 'both node processes still running');
    const inGap = (p: string) => detached.some(([from, to]) => ackedAt.get(p)! >= from && ackedAt.get(p)! <= to);
    lost.whileAttached = missing().filter((p) => !inGap(p));
    lost.whileDetached = missing().filter(inGap);
    lost.ran = true;
    console.log(`redis outage: acknowledged but lost — ${lost.whileAttached.length} published while the session was attached, ${lost.whileDetached.length} while it was detached (${lost.whileDetached.join(' ')})`);
    assert.deepEqual(lost.whileAttached, [], 'acknowledged while the subscriber\'s session was attached, missing at the subscriber');
  });

  test('no acknowledged message is lost, even one published while the subscriber was away', () => {
    assert.ok(lost.ran, 'the outage test ran');
    assert.deepEqual(lost.whileDetached, [], 'acknowledged while the subscriber was away, never delivered');
  });
});
