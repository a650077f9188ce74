#!/usr/bin/env node
// Fleet reconnect of two builds, A/B, on a busy machine: the fleet-reconnect layout (bench/lib/
// scenarios.mjs: N clients with distinct RS256 JWTs carrying an acl claim, retained QoS 1 wills,
// persistent sessions stored by node A, then all N at once to node B; Redis on the generator
// CPU), a fresh cluster per run, runs alternating A B A B so each pair runs back to back under
// the same load. Per run: CONNACKs and the time until the last, and what each process spent per
// resumed connection from the moment the storm starts until the last CONNACK (user + kernel µs
// from /proc/<pid>/stat: node B whole, node B's main thread alone, node A, Redis), with the Redis
// commands per connection (INFO commandstats; the calls inside scripts are counted too). Time to
// the last CONNACK moves with the machine's load; the CPU per connection much less.
//
//   npx tsc -p .   (in both checkouts)
//   node bench/fleet-ab.mjs --a /path/to/base --b . [--pairs 2] [--clients 2000]
//        [--broker-cpus 0] [--gen-cpus 1] [--loadgen BIN] [--b-node-args="--cpu-prof ..."]
// --b-node-args: Node flags for node B of every run (both sides).
// Bounded: priming and the storm each have a deadline; every process is stopped after a run.
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { buildLoadgen, freePort, launchPinned, processCpu, redisCommandCalls, stopPinned, waitForPort } from './lib/brokers.mjs';
import { makeJwtMaterial } from './lib/jwt.mjs';
import { runLoadgen } from './lib/scenarios.mjs';

const { values: o } = parseArgs({
  options: {
    a: { type: 'string' },
    b: { type: 'string' },
    pairs: { type: 'string', default: '2' },
    clients: { type: 'string', default: '2000' },
    loadgen: { type: 'string' },
    'broker-cpus': { type: 'string', default: '0' },
    'gen-cpus': { type: 'string', default: '1' },
    'b-node-args': { type: 'string', default: '' },
  },
});
if (!o.a || !o.b) {
  console.error('usage: node bench/fleet-ab.mjs --a DIR --b DIR [--pairs 2] [--clients 2000]');
  process.exit(2);
}
const n = Number(o.clients);
const loadgen = o.loadgen ?? buildLoadgen('fleet-ab-');
const work = mkdtempSync(path.join(os.tmpdir(), 'fleet-ab-'));
const tokens = await makeJwtMaterial(work, n, { subPrefix: 'fleet', name: 'fleet-tokens', claims: (sub) => ({ acl: { publish: [`fleet/${sub}/state`] } }) });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** CPU seconds of each thread of a process, by thread name and id (/proc/<pid>/task/<tid>/comm). */
function threadsCpu(pid) {
  const out = {};
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const name = Number(tid) === pid ? 'main' : `${readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim()}:${tid}`;
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out[name] = (out[name] ?? 0) + (Number(f[11]) + Number(f[12])) / 100;
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

/** The C generator on the generator CPU: its result line (onEvent for each event line). */
const generator = (args, timeoutMs, onEvent) => runLoadgen(['-c', o['gen-cpus'], loadgen, ...args], timeoutMs, () => undefined, onEvent);

async function run(dir) {
  const cwd = path.resolve(dir);
  const procs = [];
  try {
    const redisPort = await freePort();
    const redis = launchPinned(o['gen-cpus'], 'redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no'], {}, cwd);
    procs.push(redis);
    await waitForPort(redisPort, 10000, redis.dead);
    const nodes = [];
    for (const id of ['a', 'b']) {
      const port = await freePort();
      const env = {
        VIGIL_MQTT_PORT: String(port),
        VIGIL_METRICS_PORT: '0',
        VIGIL_BIND: '127.0.0.1',
        VIGIL_LOG_LEVEL: 'warn',
        VIGIL_SYS_INTERVAL_S: '0',
        VIGIL_MAX_CONNECTIONS: '100000',
        VIGIL_AUTH: 'jwt',
        VIGIL_JWKS: tokens.jwksPath,
        VIGIL_JWT_ALGORITHMS: 'RS256',
        VIGIL_REDIS_URL: `redis://127.0.0.1:${redisPort}`,
        VIGIL_REDIS_PREFIX: `fab${Date.now()}`,
        VIGIL_NODE_ID: `fleet-${id}`,
        VIGIL_NODE_TIMEOUT_MS: '3000',
        VIGIL_HEARTBEAT_MS: '1000',
      };
      const nodeArgs = id === 'b' ? o['b-node-args'].split(' ').filter(Boolean) : [];
      const node = launchPinned(o['broker-cpus'], process.execPath, [...nodeArgs, 'dist/src/cli.js'], env, cwd);
      procs.push(node);
      await waitForPort(port, 15000, node.dead);
      nodes.push({ ...node, port });
    }
    const [a, b] = nodes;
    const common = ['--scenario', 'connect', '--tokens', tokens.tsvPath, '--clean', '0', '--will', '--id-prefix', 'fleet', '--keepalive', '600', '--total', String(n), '--warmup-ms', '0'];
    const primed = await generator(['--port', String(a.port), ...common, '--concurrency', '200', '--duration-ms', '120000'], 150000);
    if (primed.accepted < n) throw new Error(`priming: node A accepted ${primed.accepted}/${n}`);
    await sleep(1000);
    const pids = { a: a.child.pid, b: b.child.pid, redis: redis.child.pid };
    const sample = async () => ({ a: processCpu(pids.a), b: processCpu(pids.b), threads: threadsCpu(pids.b), redis: processCpu(pids.redis), calls: await redisCommandCalls(redisPort) });
    const begin = await sample();
    let end;
    const r = await generator(['--port', String(b.port), ...common, '--hold', '--hold-ms', '1000', '--duration-ms', '60000'], 90000, (msg) => {
      if (msg.event === 'connected') end = sample().then((s) => ({ ...s, msg }));
    });
    const last = await (end ?? sample().then((s) => ({ ...s, msg: r })));
    const c = last.msg;
    const per = (x) => (x * 1e6) / c.accepted;
    const cmds = {};
    for (const [k, v] of Object.entries(last.calls)) {
      const d = v - (begin.calls[k] ?? 0);
      if (k !== 'info' && d / c.accepted >= 0.05) cmds[k] = +(d / c.accepted).toFixed(2);
    }
    return {
      connected: c.accepted,
      allInS: +(c.spanUs / 1e6).toFixed(2),
      p50S: +(c.p50Us / 1e6).toFixed(2),
      bUser: Math.round(per(last.b.user - begin.b.user)),
      bSys: Math.round(per(last.b.system - begin.b.system)),
      bMain: Math.round(per(last.threads.main - begin.threads.main)),
      // node A shares the broker CPU: it drops its offline copy of each session taken over (the kick)
      a: Math.round(per(last.a.user + last.a.system - begin.a.user - begin.a.system)),
      redis: Math.round(per(last.redis.user + last.redis.system - begin.redis.user - begin.redis.system)),
      threads: Object.fromEntries(Object.entries(last.threads).map(([k, v]) => [k, Math.round(per(v - (begin.threads[k] ?? 0)))]).filter(([, v]) => v >= 5)),
      cmds,
      load: readFileSync('/proc/loadavg', 'utf8').split(' ')[0],
    };
  } finally {
    // the nodes first (they leave the cluster through Redis); a profiled node writes its
    // profile on the way out: it gets the time to
    for (const p of procs.reverse()) await stopPinned(p, 'SIGTERM', o['b-node-args'] ? 30000 : 5000);
  }
}

const results = { a: [], b: [] };
for (let i = 0; i < Number(o.pairs); i++) {
  for (const side of ['a', 'b']) {
    const r = await run(o[side]);
    results[side].push(r);
    console.log(side, JSON.stringify(r));
  }
}
const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
for (const side of ['a', 'b']) {
  const rs = results[side];
  console.log(`${side} (${o[side]}): node B µs/conn user+sys median ${median(rs.map((r) => r.bUser + r.bSys))} (main thread ${median(rs.map((r) => r.bMain))}), node A ${median(rs.map((r) => r.a))}, Redis ${median(rs.map((r) => r.redis))} µs/conn, all in ${median(rs.map((r) => r.allInS))} s`);
}
