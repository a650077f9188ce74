#!/usr/bin/env node
// Cross-node delivery of two builds, A/B, on a busy machine: the cluster-qos0 / cluster-qos1
// layout (Redis and two Vigil nodes of one checkout, 8 publishers on node A -> 8 subscribers on
// node B, 64 B, window 64, the C generator), a fresh cluster per run, runs alternating A B A B
// so each pair runs back to back under the same load. Per run: delivered msg/s and p50, and
// what each process spent per delivered message (user + kernel µs from /proc/<pid>/stat over
// the measured window: node A, node B, Redis), with the Redis commands per 1,000 messages
// (INFO commandstats). Saturated throughput moves by 1.5x between runs at load 5-7; the CPU per
// message of each side moves less and says which side a change helped.
//
//   npx tsc -p .   (in both checkouts)
//   node bench/cluster-ab.mjs --a /path/to/base --b . [--pairs 3] [--qos 0|1] [--ms 4000]
//        [--redis-cpus 0] [--broker-cpus 0] [--gen-cpus 1] [--single] [--loadgen BIN]
// --redis-cpus: where Redis runs (the bench's cluster-qos* put it on the broker CPU, 0).
// --single: one node without Redis, publishers and subscribers on it (qos0-pairs' layout).
// Bounded: every run has a fixed window and a 60 s deadline; every process is stopped after it.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { buildLoadgen, freePort, launchPinned, processCpu, redisCommandCalls, stopPinned, waitForPort } from './lib/brokers.mjs';

const { values: o } = parseArgs({
  options: {
    a: { type: 'string' },
    b: { type: 'string' },
    pairs: { type: 'string', default: '3' },
    qos: { type: 'string', default: '0' },
    ms: { type: 'string', default: '4000' },
    single: { type: 'boolean', default: false },
    loadgen: { type: 'string' },
    'redis-cpus': { type: 'string', default: '0' },
    'broker-cpus': { type: 'string', default: '0' },
    'gen-cpus': { type: 'string', default: '1' },
  },
});
if (!o.a || !o.b) {
  console.error('usage: node bench/cluster-ab.mjs --a DIR --b DIR [--pairs 3] [--qos 0|1] [--ms 4000] [--redis-cpus 0] [--single]');
  process.exit(2);
}
const WARMUP_MS = 1000;
const loadgen = o.loadgen ?? buildLoadgen('cluster-ab-');


const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** utime + stime in seconds. */
function cpuSeconds(pid) {
  const { user, system } = processCpu(pid);
  return user + system;
}

async function run(dir) {
  const cwd = path.resolve(dir);
  const procs = [];
  try {
    let redisPort;
    let redis;
    if (!o.single) {
      redisPort = await freePort();
      redis = await launchPinned(o['redis-cpus'], 'redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no'], {}, cwd);
      procs.push(redis);
      await waitForPort(redisPort, 10000, redis.dead);
    }
    const prefix = `ab${Date.now()}`;
    const nodes = [];
    for (const id of o.single ? ['a'] : ['a', 'b']) {
      const port = await freePort();
      const env = { VIGIL_MQTT_PORT: String(port), VIGIL_METRICS_PORT: '0', VIGIL_BIND: '127.0.0.1', VIGIL_LOG_LEVEL: 'warn', VIGIL_SYS_INTERVAL_S: '0', VIGIL_MAX_CONNECTIONS: '100000' };
      if (!o.single) Object.assign(env, { VIGIL_REDIS_URL: `redis://127.0.0.1:${redisPort}`, VIGIL_REDIS_PREFIX: prefix, VIGIL_NODE_ID: `ab-${id}`, VIGIL_NODE_TIMEOUT_MS: '3000', VIGIL_HEARTBEAT_MS: '1000' });
      const node = await launchPinned(o['broker-cpus'], process.execPath, ['dist/src/cli.js'], env, cwd);
      procs.push(node);
      await waitForPort(port, 15000, node.dead);
      nodes.push({ ...node, port });
    }
    const [a, b = a] = nodes;
    await sleep(1500); // routes announced, bus streams open
    const args = ['--port', String(a.port), '--sub-port', String(b.port), '--scenario', 'pairs', '--qos', o.qos, '--pubs', '8', '--subs', '8', '--inflight', '64', '--size', '64', '--topic', `bench/ab${o.qos}`, '--warmup-ms', String(WARMUP_MS), '--duration-ms', o.ms, '--setup-timeout-ms', '30000', '--rate', '0', '--turn-us', '0'];
    const gen = await launchPinned(o['gen-cpus'], loadgen, args, {}, cwd, 'pipe');
    procs.push(gen);
    const sides = { a: a.child.pid, ...(o.single ? {} : { b: b.child.pid, redis: redis.child.pid }) };
    const sample = async () => ({ cpu: Object.fromEntries(Object.entries(sides).map(([k, pid]) => [k, cpuSeconds(pid)])), calls: redisPort ? await redisCommandCalls(redisPort) : {} });
    let out = '';
    let start;
    let end;
    gen.child.stdout.on('data', (d) => {
      out += d;
      if (start || !out.includes('"go"')) return;
      // the generator's measured window: after its warm-up, for --ms
      start = sleep(WARMUP_MS).then(sample);
      end = start.then(() => sleep(Number(o.ms))).then(sample);
    });
    await new Promise((resolve, reject) => {
      const deadline = setTimeout(() => reject(new Error('run did not end within 60 s')), 60000);
      gen.child.on('exit', () => {
        clearTimeout(deadline);
        resolve();
      });
    });
    const result = JSON.parse(out.trim().split('\n').pop());
    if (!start || !result.ok) throw new Error(`generator failed: ${out.trim().split('\n').pop()}`);
    const begin = await start;
    const { cpu, calls } = await end;
    const n = result.received;
    const usPerMsg = Object.fromEntries(Object.keys(sides).map((k) => [k, ((cpu[k] - begin.cpu[k]) * 1e6) / n]));
    const perKmsg = {};
    for (const [k, v] of Object.entries(calls)) {
      const d = v - (begin.calls[k] ?? 0);
      if (k !== 'info' && (1000 * d) / n >= 0.5) perKmsg[k] = +((1000 * d) / n).toFixed(1);
    }
    return { msgsPerSec: n / (Number(o.ms) / 1000), p50Us: result.p50Us, usPerMsg, perKmsg, load: readFileSync('/proc/loadavg', 'utf8').split(' ')[0] };
  } finally {
    for (const p of procs.reverse()) await stopPinned(p);
  }
}

const runs = { A: [], B: [] };
const dirs = { A: o.a, B: o.b };
const fmt = (x) => x.toFixed(2);
for (let i = 0; i < Number(o.pairs); i++) {
  for (const side of ['A', 'B']) {
    const r = await run(dirs[side]);
    runs[side].push(r);
    const cpu = Object.entries(r.usPerMsg).map(([k, v]) => `${k} ${fmt(v)}`).join(', ');
    console.log(`${side} ${i + 1}: ${Math.round(r.msgsPerSec).toLocaleString('en')} msg/s, p50 ${(r.p50Us / 1000).toFixed(1)} ms, µs CPU per message: ${cpu}; Redis commands per 1,000 messages ${JSON.stringify(r.perKmsg)}; load ${r.load}`);
  }
}
const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor((xs.length - 1) / 2)];
for (const side of ['A', 'B']) {
  const r = runs[side];
  const cpu = Object.keys(r[0].usPerMsg).map((k) => `${k} ${fmt(median(r.map((x) => x.usPerMsg[k])))}`).join(', ');
  console.log(`${side} (${dirs[side]}): median ${Math.round(median(r.map((x) => x.msgsPerSec))).toLocaleString('en')} msg/s, µs CPU per message ${cpu} (${r.length} runs, QoS ${o.qos}${o.single ? ', one node' : `, Redis on CPU ${o['redis-cpus']}`})`);
}
