// Redis restarted under audited traffic with the persistence Vigil ships (docker-compose.yml,
// bench/cluster-local.sh): appendonly yes, appendfsync everysec — not the fsync-always the
// other outage tests use. Three Vigil processes, QoS 1 and QoS 2 publishers and persistent
// subscribers across them (test/helpers/audit.ts).
//
// 1. SHUTDOWN (what SIGTERM, `docker compose restart` and a service stop do): Redis fsyncs the
//    append-only file before it exits, so nothing acknowledged is lost and QoS 2 arrives once.
// 2. SIGKILL: everysec fsyncs once a second, but Redis writes the AOF before it answers, so
//    with the machine still up the kernel has every acknowledged write; the loss is measured
//    and reported (README, Durability: up to about a second when an fsync stalls, and on a
//    machine crash).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { startNode, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { auditLine, lossRanges, runAudit } from '../helpers/audit.js';
import { sleep } from '../helpers/mqtt.js';

let redis: TestRedis;
let nodes: VigilNode[] = [];

before(async () => {
  redis = await startRedis({ appendonly: true, appendfsync: 'everysec' });
  const setup = redis.client();
  assert.deepEqual(await setup.config('GET', 'appendfsync'), ['appendfsync', 'everysec']);
  setup.disconnect();
  const prefix = randomPrefix('rr');
  nodes = await Promise.all(['a', 'b', 'c'].map((nodeId) => startNode({ redisUrl: redis.url, prefix, nodeId })));
  await waitUntil(async () => (await Promise.all(nodes.map((n) => n.ready()))).every(Boolean), 10_000, 'nodes ready');
});
after(async () => {
  await Promise.all(nodes.map((n) => n.kill('SIGKILL')));
  await redis?.stop();
});

async function audited(name: string, restart: () => Promise<void>) {
  const result = await runAudit({
    nodes,
    publishersPerQos: 2,
    subscribers: 3,
    durationMs: 10_000,
    publishEveryMs: 20,
    settleMs: 10_000,
    log: (line) => process.stdout.write(`# ${line}\n`),
    faults: [{ atMs: 3000, name, run: restart }],
  });
  for (const q of result.byQos) {
    process.stdout.write(`# ${name}: ${auditLine(q).slice(2)}\n`);
    for (const line of lossRanges(q.lost)) process.stdout.write(`#   lost ${line}\n`);
    for (const line of lossRanges(q.duplicated)) process.stdout.write(`#   duplicated ${line}\n`);
  }
  for (const q of result.byQos) assert.ok(q.acknowledged >= 20, `QoS ${q.qos}: traffic flowed (${q.acknowledged} acknowledged)`);
  // every node is back on the restarted Redis before the next run
  await waitUntil(async () => (await Promise.all(nodes.map((n) => n.ready()))).every(Boolean), 20_000, 'nodes ready again');
  return result;
}

describe('Redis restart with appendonly yes, appendfsync everysec', { timeout: 90_000 }, () => {
  // Once lost a run of acknowledged deliveries at one node: the bus reader's XREADGROUP was
  // served just before the SHUTDOWN, its reply died with the connection, and ioredis sent the
  // read again on the restarted server without an error (test/cluster/bus.test.ts, "reply died").
  test('SHUTDOWN (as SIGTERM) and start again on its AOF: nothing acknowledged lost, QoS 2 once', async () => {
    const result = await audited('Redis SHUTDOWN, start again', async () => {
      await redis.shutdownAndRestart();
    });
    for (const q of result.byQos) assert.deepEqual(q.lost.slice(0, 20), [], `QoS ${q.qos}: ${q.lost.length} acknowledged deliveries missing`);
    assert.deepEqual(result.byQos[1].duplicated.slice(0, 20), [], `${result.byQos[1].duplicates} QoS 2 copies`);
  });

  test('SIGKILL and start again on its AOF: the loss is measured and reported', async () => {
    const result = await audited('Redis SIGKILL, 1 s down, start again', async () => {
      await redis.kill();
      await sleep(1000);
      await redis.restart();
    });
    const lost = result.byQos.reduce((n, q) => n + q.lost.length, 0);
    process.stdout.write(`# SIGKILL with appendfsync everysec: ${lost} acknowledged deliveries lost (machine up: the kernel had the AOF writes)\n`);
  });
});
