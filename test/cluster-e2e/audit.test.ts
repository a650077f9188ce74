// Audited QoS 1 and QoS 2 runs (three Vigil processes on one real Redis, AOF with fsync on
// every write): publishers number every message, persistent subscribers on every node
// record what they get. During the run node A (holding a subscriber and publishers) is
// SIGKILLed and its clients fail over to B and C; later Redis is SIGKILLed and restarted after
// 2 s. At the end every message acknowledged to its publisher (PUBACK / PUBCOMP) must have
// reached every subscriber: QoS 1 at least once (duplicates counted), QoS 2 exactly once.
// The long variant is bench/audit.mjs.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { startNode, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { auditLine, lossRanges, runAudit } from '../helpers/audit.js';
import { sleep } from '../helpers/mqtt.js';

let redis: TestRedis;
let nodes: VigilNode[] = [];
let audit: Awaited<ReturnType<typeof runAudit>> | undefined;

before(async () => {
  redis = await startRedis({ appendonly: true });
  const setup = redis.client();
  await setup.config('SET', 'appendfsync', 'always');
  setup.disconnect();
  const prefix = randomPrefix('au');
  nodes = await Promise.all(['a', 'b', 'c'].map((nodeId) => startNode({ redisUrl: redis.url, prefix, nodeId })));
  await waitUntil(async () => (await Promise.all(nodes.map((n) => n.ready()))).every(Boolean), 5000, 'nodes ready');
});
after(async () => {
  await Promise.all(nodes.map((n) => n.kill('SIGKILL')));
  await redis?.stop();
});

describe('audited QoS 1 / QoS 2 run', { timeout: 60_000 }, () => {
  test('audited traffic across a node crash and a Redis restart: every node survives, publishing resumes', async () => {
    const [a] = nodes;
    const result = await runAudit({
      nodes,
      publishersPerQos: 3,
      subscribers: 3,
      durationMs: 14_000,
      publishEveryMs: 20,
      settleMs: 8000,
      log: (line) => process.stdout.write(`# ${line}\n`),
      faults: [
        { atMs: 3000, name: `SIGKILL node ${a.nodeId}`, run: () => a.kill('SIGKILL') },
        {
          atMs: 8000,
          name: 'Redis SIGKILL, 2 s down, restart',
          run: async () => {
            await redis.kill();
            await sleep(2000);
            await redis.restart();
          },
        },
      ],
    });
    if (process.env.VIGIL_AUDIT_LOGS) {
      const { writeFileSync } = await import('node:fs');
      writeFileSync(process.env.VIGIL_AUDIT_LOGS, nodes.map((n) => n.logs.map((l) => JSON.stringify({ node: n.nodeId, ...l })).join('\n')).join('\n'));
    }
    for (const q of result.byQos) {
      process.stdout.write(`${auditLine(q)}\n`);
      for (const line of lossRanges(q.lost)) process.stdout.write(`#   lost ${line}\n`);
      for (const line of lossRanges(q.duplicated)) process.stdout.write(`#   duplicated ${line}\n`);
    }
    for (const q of result.byQos) assert.ok(q.acknowledged > 100, `QoS ${q.qos}: traffic flowed (${q.acknowledged} acknowledged)`);
    audit = result;
  });

  test('no acknowledged message is lost', () => {
    assert.ok(audit, 'the audited run ran');
    for (const q of audit.byQos) assert.deepEqual(q.lost.slice(0, 20), [], `QoS ${q.qos}: ${q.lost.length} missing deliveries`);
  });

  test('QoS 2 is delivered exactly once', () => {
    assert.ok(audit, 'the audited run ran');
    assert.deepEqual(audit.byQos[1].duplicated.slice(0, 20), [], `${audit.byQos[1].duplicates} QoS 2 copies`);
  });
});
