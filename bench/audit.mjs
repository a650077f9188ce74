#!/usr/bin/env node
// Long audited QoS 1 / QoS 2 run (the suite's short variant is test/cluster-e2e/audit.test.ts):
// 3 Vigil nodes on one real Redis (AOF, fsync always), 3 publishers per QoS numbering every
// message, 3 persistent subscribers; node a is SIGKILLed at 25 % of the run, Redis is
// SIGKILLed at 60 % and restarted 2 s later (`--redis-down-ms`: shorter than the node timeout,
// leases survive; longer, every lease lapses and the nodes rejoin). Prints `# audit QoS n: published N, acknowledged M,
// lost L, duplicates D` and the lost seq ranges; exit 1 on any loss (or a QoS 2 duplicate).
//
//   npm run build && node bench/audit.mjs [--minutes 2] [--publish-every-ms 20] [--redis-down-ms 2000]
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
if (!existsSync(path.join(ROOT, 'dist/test/helpers/audit.js'))) spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', ROOT], { stdio: 'inherit' });
const { runAudit, auditLine, lossRanges } = await import('../dist/test/helpers/audit.js');
const { startRedis, randomPrefix } = await import('../dist/test/helpers/redis.js');
const { startNode, waitUntil } = await import('../dist/test/helpers/cluster.js');

const opt = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const durationMs = opt('minutes', 2) * 60_000;
const redisDownMs = opt('redis-down-ms', 2000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const redis = await startRedis({ appendonly: true });
const setup = redis.client();
await setup.config('SET', 'appendfsync', 'always');
setup.disconnect();
const prefix = randomPrefix('audit');
const nodes = await Promise.all(['a', 'b', 'c'].map((nodeId) => startNode({ redisUrl: redis.url, prefix, nodeId })));
let code = 1;
try {
  await waitUntil(async () => (await Promise.all(nodes.map((n) => n.ready()))).every(Boolean), 10_000, 'nodes ready');
  const result = await runAudit({
    nodes,
    publishersPerQos: 3,
    subscribers: 3,
    durationMs,
    publishEveryMs: opt('publish-every-ms', 20),
    settleMs: 15_000,
    log: (line) => console.log(`# ${line}`),
    faults: [
      { atMs: durationMs * 0.25, name: 'SIGKILL node a', run: () => nodes[0].kill('SIGKILL') },
      { atMs: durationMs * 0.6, name: `Redis SIGKILL, ${redisDownMs} ms down, restart`, run: async () => (await redis.kill(), await sleep(redisDownMs), await redis.restart()) },
    ],
  });
  for (const q of result.byQos) {
    console.log(auditLine(q));
    for (const line of lossRanges(q.lost)) console.log(`#   lost ${line}`);
  }
  const ok = result.byQos.every((q) => q.lost.length === 0) && result.byQos[1].duplicates === 0;
  console.log(ok ? 'audit: PASS' : 'audit: FAIL');
  code = ok ? 0 : 1;
} finally {
  await Promise.all(nodes.map((n) => n.kill('SIGKILL')));
  await redis.stop();
}
process.exit(code);
