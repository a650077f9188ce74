#!/usr/bin/env node
// The reaper's Redis-facing CPU per client: ClientRegistry.orphanClients over N clients with
// delay-0 wills that a dead member owned, on a real redis-server started here (127.0.0.1, a free
// port, no persistence), with a fire hook that only counts. What it leaves out is the
// publishing (bench/will-fire-micro.mjs has that); what it covers is what only the cluster
// adds: the SSCAN reads, the orphan-client.lua calls and their ioredis encoding, the reply
// parsing, the will records decoded. CPU is this process's own (process.cpuUsage) and
// Redis's (/proc/<pid>/stat), per client. With --other DIR the runs alternate between this
// checkout's build and DIR's (another checkout, built), A B A B, for A/B on a busy machine.
//
// With --prefetch the wills are first read ahead (ClientRegistry.prefetchWills, as a survivor
// does while the member is overdue), timed on their own: the reaping then decodes none.
//
//   npx tsc -p . && node bench/reaper-micro.mjs [--clients 10000] [--runs 3] [--other DIR] [--prefetch]
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { freePort, processCpu, waitForPort } from './lib/brokers.mjs';

const { values: args } = parseArgs({ options: { clients: { type: 'string', default: '10000' }, runs: { type: 'string', default: '3' }, other: { type: 'string' }, prefetch: { type: 'boolean', default: false } } });
const N = Math.min(100000, Number(args.clients));
const runs = Math.min(20, Number(args.runs));
const here = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const builds = [here, ...(args.other ? [path.resolve(args.other)] : [])];


const port = await freePort();
const redisProc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
const redisCpuUs = () => {
  const { user, system } = processCpu(redisProc.pid);
  return (user + system) * 1e6;
};
let redisDead = false;
redisProc.on('exit', () => (redisDead = true));
await waitForPort(port, 10000, () => redisDead);

const loaded = [];
for (const root of builds) {
  const { ClientRegistry } = await import(path.join(root, 'dist/src/cluster/registry.js'));
  const { ClusterKeys } = await import(path.join(root, 'dist/src/cluster/keys.js'));
  const { VigilRedis } = await import(path.join(root, 'dist/src/redis/connection.js'));
  loaded.push({ root, ClientRegistry, ClusterKeys, redis: new VigilRedis({ target: { url: `redis://127.0.0.1:${port}` } }) });
}

let round = 0;
async function once(b) {
  const keys = new b.ClusterKeys(`reaper-micro-${round++}`);
  const registry = new b.ClientRegistry({ redis: b.redis, keys });
  const dead = 'dead/1';
  for (let i = 0; i < N; i += 500) {
    await Promise.all(Array.from({ length: Math.min(500, N - i) }, (_, k) => {
      const id = `bench-will-${i + k}`;
      const will = { clientId: id, message: { topic: `bench/will/${id}`, payload: Buffer.from('gone'), qos: 1, retain: false, origin: id }, delayS: 0, identity: { username: '', clientId: id, roles: ['anonymous'], authenticatedAtMs: 1764600000000 }, epoch: 0, protocolVersion: 4 };
      return registry.claim(id, dead, { cleanStart: true, sessionExpiryS: 0, owner: 'u', will });
    }));
  }
  let fired = 0;
  let prefetch;
  let ahead = '';
  if (args.prefetch && registry.prefetchWills) {
    const p0 = redisCpuUs();
    const c0 = process.cpuUsage();
    const w0 = performance.now();
    prefetch = registry.prefetchWills(dead);
    await prefetch.done;
    const cpu = process.cpuUsage(c0);
    ahead = `; read ahead first: ${((cpu.user + cpu.system) / N).toFixed(1)} µs/client, Redis ${((redisCpuUs() - p0) / N).toFixed(1)}, ${(performance.now() - w0).toFixed(0)} ms`;
  }
  const r0 = redisCpuUs();
  const c0 = process.cpuUsage();
  const w0 = performance.now();
  const report = await registry.orphanClients(dead, () => void fired++, 'reaper/1', prefetch);
  if (prefetch && report.prefetched !== N) throw new Error(`${report.prefetched} of ${N} wills read ahead`);
  const cpu = process.cpuUsage(c0);
  const wallMs = performance.now() - w0;
  const redisUs = redisCpuUs() - r0;
  if (fired !== N) throw new Error(`${fired} of ${N} wills fired`);
  await b.redis.client.flushdb();
  return { reaper: (cpu.user + cpu.system) / N, redis: redisUs / N, wallMs, ahead };
}

try {
  for (const b of loaded) await once(b); // warm-up: scripts loaded, code compiled
  const results = new Map(loaded.map((b) => [b.root, []]));
  for (let r = 0; r < runs; r++) {
    for (const b of loaded) {
      const x = await once(b);
      results.get(b.root).push(x);
      console.log(`${b.root === here ? 'this ' : 'other'} reaper ${x.reaper.toFixed(1)} µs/client, Redis ${x.redis.toFixed(1)} µs/client, ${x.wallMs.toFixed(0)} ms for ${N}${x.ahead}`);
    }
  }
  for (const [root, xs] of results) {
    const med = (k) => [...xs].sort((a, b) => a[k] - b[k])[Math.floor(xs.length / 2)][k];
    console.log(`${root}: median reaper ${med('reaper').toFixed(1)} µs/client, Redis ${med('redis').toFixed(1)} µs/client (${xs.length} runs of ${N})`);
  }
} finally {
  for (const b of loaded) b.redis.client.disconnect();
  redisProc.kill();
}
