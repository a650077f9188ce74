#!/usr/bin/env node
// Broker CPU per connection of two builds, A/B, on a busy machine. Both brokers run at once,
// idle but for the storm, on the broker CPU; a connect storm at a fixed rate (loadgen --rate)
// goes to A, then to B, then A again, and so on, so each pair runs back to back under the
// same load, and at equal rate both do the same work per second (saturated runs do not
// compare: an unsaturated broker batches less and pays more per connection). Per storm:
// user and kernel µs per connection from /proc/<pid>/stat over that storm alone.
//
//   npx tsc -p .   (in both checkouts)
//   node bench/storm-ab.mjs --a /path/to/base --b . [--pairs 8] [--rate 2000] [--connections 8000]
//        [--broker vigil|floor] [--a-node-args "..."] [--b-node-args "..."] [--loadgen BIN]
// --loadgen: a built bench/gen/loadgen.c; without it this checkout's is built (gcc) into a temp dir.
//
// --a / --b: checkouts (built: dist/src/cli.js; --broker floor runs their bench/brokers/
// bare-node-floor.mjs). The same checkout twice with different --*-node-args compares V8 flags.
// Prints each storm, then the median and minimum per side and the load average it ran at.
// Bounded: every storm has a fixed count and a 60 s deadline; both brokers are stopped at the end.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { buildLoadgen, connectStorm, freePort, processCpu, waitForPort } from './lib/brokers.mjs';

const { values: o } = parseArgs({
  options: {
    a: { type: 'string' },
    b: { type: 'string' },
    pairs: { type: 'string', default: '8' },
    rate: { type: 'string', default: '2000' },
    connections: { type: 'string', default: '8000' },
    broker: { type: 'string', default: 'vigil' },
    'a-node-args': { type: 'string', default: '' },
    'b-node-args': { type: 'string', default: '' },
    loadgen: { type: 'string' },
    'broker-cpus': { type: 'string', default: '0' },
    'gen-cpus': { type: 'string', default: '1' },
  },
});
if (!o.a || !o.b) {
  console.error('usage: node bench/storm-ab.mjs --a DIR --b DIR [--pairs 8] [--rate 2000] [--connections 8000] [--broker vigil|floor]');
  process.exit(2);
}

const loadgen = o.loadgen ?? buildLoadgen('storm-ab-');


async function start(dir, nodeArgs) {
  const port = await freePort();
  const entry = o.broker === 'floor' ? ['bench/brokers/bare-node-floor.mjs', String(port), '127.0.0.1'] : ['dist/src/cli.js'];
  const env = { ...process.env, VIGIL_MQTT_PORT: String(port), VIGIL_BIND: '127.0.0.1', VIGIL_METRICS_PORT: '0', VIGIL_LOG_LEVEL: 'warn', VIGIL_SYS_INTERVAL_S: '0' };
  const args = ['-c', o['broker-cpus'], process.execPath, ...nodeArgs.split(' ').filter(Boolean), ...entry];
  const child = spawn('taskset', args, { cwd: path.resolve(dir), env, stdio: 'ignore' });
  let dead = false;
  child.on('exit', () => (dead = true));
  await waitForPort(port, 15000, () => dead);
  return { child, port, dir };
}

const storm = (port, total) => connectStorm(loadgen, o['gen-cpus'], port, total, o.rate);

function measure(b) {
  const t0 = processCpu(b.child.pid);
  const n = storm(b.port, Number(o.connections));
  const t1 = processCpu(b.child.pid);
  const user = ((t1.user - t0.user) * 1e6) / n;
  const kernel = ((t1.system - t0.system) * 1e6) / n;
  return { user, kernel, total: user + kernel, load: readFileSync('/proc/loadavg', 'utf8').split(' ')[0] };
}

const sides = { A: await start(o.a, o['a-node-args']), B: await start(o.b, o['b-node-args']) };
const runs = { A: [], B: [] };
try {
  for (const s of Object.values(sides)) storm(s.port, 5000); // warm-up: JIT, first maps
  for (let i = 0; i < Number(o.pairs); i++) {
    for (const name of ['A', 'B']) {
      const m = measure(sides[name]);
      runs[name].push(m);
      console.log(`${name} ${i + 1}: ${m.total.toFixed(0)} µs per connection (user ${m.user.toFixed(0)}, kernel ${m.kernel.toFixed(0)}), load ${m.load}`);
    }
  }
} finally {
  for (const s of Object.values(sides)) s.child.kill('SIGTERM');
}
const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor((xs.length - 1) / 2)];
for (const name of ['A', 'B']) {
  const r = runs[name];
  const pick = (k) => r.map((m) => m[k]);
  console.log(`${name} (${sides[name].dir}): median ${median(pick('total')).toFixed(0)} µs (user ${median(pick('user')).toFixed(0)}, kernel ${median(pick('kernel')).toFixed(0)}), min ${Math.min(...pick('total')).toFixed(0)}, ${r.length} storms of ${o.connections} at ${o.rate}/s`);
}
