#!/usr/bin/env node
// What a connect storm allocates and promotes per connection, and where: bytes, not CPU, so
// it compares builds on a busy machine, where CPU per connection is noise. One broker (a
// checkout's Vigil, or its bare Node floor) on the broker CPU, loadgen on the other, storms at a
// fixed rate. Storm 1 under V8's sampling heap profiler (every allocation, by allocating
// function and its caller); storm 2 sampling only what major GCs free (objects scavenges
// promoted that then died in the old generation: what makes a storm's scavenges slow). Both
// storms also count V8's own figures from --trace-gc-nvp: bytes allocated and promoted,
// scavenges, their pauses (the pauses are wall time: noisy under load).
//
//   npx tsc -p .
//   node bench/storm-alloc.mjs [--dir .] [--broker vigil|floor] [--connections 12000] [--rate 2000] [--top 20]
//
// Bounded: a warm-up storm of 5,000 and two storms of --connections, each with a 60 s
// deadline; the broker is stopped at the end. Compare two builds by running it in each.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { buildLoadgen, connectStorm, freePort, waitForPort } from './lib/brokers.mjs';

const { values: o } = parseArgs({
  options: {
    dir: { type: 'string', default: '.' },
    broker: { type: 'string', default: 'vigil' },
    connections: { type: 'string', default: '12000' },
    rate: { type: 'string', default: '2000' },
    top: { type: 'string', default: '20' },
    loadgen: { type: 'string' },
    'broker-cpus': { type: 'string', default: '0' },
    'gen-cpus': { type: 'string', default: '1' },
  },
});
const n = Number(o.connections);
const tmp = mkdtempSync(path.join(os.tmpdir(), 'storm-alloc-'));
const loadgen = o.loadgen ?? buildLoadgen('storm-alloc-');


const port = await freePort();
const entry = o.broker === 'floor' ? ['bench/brokers/bare-node-floor.mjs', String(port), '127.0.0.1'] : ['dist/src/cli.js'];
const sampler = new URL('./lib/heap-sampler.mjs', import.meta.url).pathname;
const env = { ...process.env, HEAP_SAMPLER_OUT: path.join(tmp, 'heap'), VIGIL_MQTT_PORT: String(port), VIGIL_BIND: '127.0.0.1', VIGIL_METRICS_PORT: '0', VIGIL_LOG_LEVEL: 'warn', VIGIL_SYS_INTERVAL_S: '0' };
const child = spawn('taskset', ['-c', o['broker-cpus'], process.execPath, '--trace-gc-nvp', '--import', sampler, ...entry], { cwd: path.resolve(o.dir), env, stdio: ['ignore', 'pipe', 'ignore'] });
let gcLog = '';
child.stdout.on('data', (d) => (gcLog += d));
let dead = false;
const exited = new Promise((r) => child.on('exit', () => ((dead = true), r())));
await waitForPort(port, 15000, () => dead);
const pause = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits (at most 15 s) for the sampler to write a profile. */
async function written(file) {
  for (let i = 0; i < 150 && !existsSync(file); i++) await pause(100);
  await pause(200);
}

const storm = (total) => connectStorm(loadgen, o['gen-cpus'], port, total, o.rate);

/** V8's figures for the GCs logged since `from`, per connection. */
function gcFigures(from, count) {
  const f = { allocated: 0, promoted: 0, scavenges: 0, scavengeMs: 0, majors: 0, majorMs: 0 };
  for (const line of gcLog.slice(from).split('\n')) {
    const kind = line.match(/\bgc=(\w+)/)?.[1];
    if (!kind) continue;
    const field = (k) => Number(line.match(new RegExp(`\\b${k}=(\\d+(?:\\.\\d+)?)`))?.[1] ?? 0);
    f.allocated += field('allocated');
    f.promoted += field('promoted');
    if (kind === 's') (f.scavenges++, (f.scavengeMs += field('pause')));
    else (f.majors++, (f.majorMs += field('pause')));
  }
  return `V8: ${(f.allocated / count).toFixed(0)} B allocated, ${(f.promoted / count).toFixed(0)} B promoted per connection; ${f.scavenges} scavenges (${((f.scavengeMs * 1000) / count).toFixed(1)} µs pause per connection), ${f.majors} major GCs (${((f.majorMs * 1000) / count).toFixed(1)} µs)`;
}

/** Sampled bytes per connection, by allocating function < its caller. */
function bySite(file, count) {
  const p = JSON.parse(readFileSync(file, 'utf8'));
  const nodes = new Map();
  (function walk(node, parent) {
    nodes.set(node.id, { node, parent });
    for (const c of node.children) walk(c, node);
  })(p.head, null);
  const name = (node) => `${node.callFrame.functionName || '(anonymous)'} ${node.callFrame.url.replace(/^.*\/(node_modules|src|bench)\//, '$1/')}:${node.callFrame.lineNumber + 1}`;
  const sites = new Map();
  let total = 0;
  for (const s of p.samples) {
    const at = nodes.get(s.nodeId);
    if (!at) continue; // a sample whose stack the profile left out
    const { node, parent } = at;
    const key = parent ? `${name(node)} < ${name(parent)}` : name(node);
    sites.set(key, (sites.get(key) ?? 0) + s.size);
    total += s.size;
  }
  const top = [...sites].sort((a, b) => b[1] - a[1]).slice(0, Number(o.top));
  return [`${(total / count).toFixed(0)} B per connection`, ...top.map(([k, v]) => `  ${(v / count).toFixed(0).padStart(6)}  ${k}`)].join('\n');
}

try {
  storm(5000); // JIT, first maps, heap sizes
  await pause(300);
  child.kill('SIGUSR2');
  await pause(300);
  let mark = gcLog.length;
  const n1 = storm(n);
  await pause(300);
  console.log(`storm 1 (${o.broker}, ${path.resolve(o.dir)}), ${n1} connections at ${o.rate}/s, load ${os.loadavg()[0].toFixed(2)}`);
  console.log(gcFigures(mark, n1));
  child.kill('SIGUSR2');
  await written(path.join(tmp, 'heap.all.json'));
  console.log(`allocated, sampled: ${bySite(path.join(tmp, 'heap.all.json'), n1)}`);
  mark = gcLog.length;
  const n2 = storm(n);
  await pause(300);
  console.log(`storm 2, ${n2} connections, load ${os.loadavg()[0].toFixed(2)}`);
  console.log(gcFigures(mark, n2));
} finally {
  child.kill('SIGTERM');
  await Promise.race([exited, pause(10000)]);
}
await written(path.join(tmp, 'heap.major.json'));
// overstated: a sampled object is kept through a weak handle, which scavenges treat as a root (bench/README)
console.log(`freed by major GCs (promoted, then dead) or still alive, sampled (sampling promotes what it samples: see V8's promoted line): ${bySite(path.join(tmp, 'heap.major.json'), n)}`);
