#!/usr/bin/env node
// Sums V8 .cpuprofile files (node --cpu-prof writes one per thread: the main thread and each
// worker thread) by function and by category, one report per file: self time, and inclusive
// time (a function's time with everything it called, counted once per stack even when it
// recurses). Idle time is left out of the shares: they are of the busy time.
//
//   node bench/prof-summary.mjs PROFILE.cpuprofile... [--top 40] [--per N] [--skip-ms MS]
//
// --per N divides the times by N (e.g. the connections the run made) and prints µs per unit.
// --skip-ms MS leaves out the first MS of each profile (start-up: module loading, warm-up).
// Caveat: V8 samples a thread by wall clock. On a core shared by several threads (the broker
// pinned to one CPU with its auth threads), a thread waiting for the CPU is charged to where it
// stopped, e.g. postMessage right after waking the main thread. For CPU per thread, read
// /proc/<pid>/task/<tid>/stat; these tables say where a thread's time goes, not how much.
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const opts = {};
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i].startsWith('--')) opts[args[i].slice(2)] = Number(args[++i]);
  else files.push(args[i]);
}
if (files.length === 0) {
  console.error('usage: node bench/prof-summary.mjs PROFILE.cpuprofile... [--top 40] [--per N] [--skip-ms MS]');
  process.exit(2);
}
const top = opts.top ?? 40;
const per = opts.per ?? 0;
const skipUs = (opts['skip-ms'] ?? 0) * 1000;

/** Where a frame's time goes, from its script and name. */
function category(cf) {
  const url = cf.url ?? '';
  const fn = cf.functionName;
  if (fn === '(garbage collector)') return 'GC';
  if (fn === '(idle)') return 'idle';
  if (fn === '(program)') return '(program): V8/libuv outside JS';
  if (url.includes('/mqtt-packet/') || url.includes('/bl/')) return 'mqtt-packet parser/generator';
  if (url.includes('/prom-client/') || url.endsWith('/src/metrics.js')) return 'metrics';
  if (url.includes('/pino') || url.includes('sonic-boom') || url.endsWith('/src/log.js')) return 'logging';
  if (url.includes('/src/transport/')) return 'vigil transport';
  if (url.includes('/src/protocol/')) return 'vigil channel/protocol';
  if (url.includes('/src/broker/') || url.includes('/src/store/')) return 'vigil broker/session';
  if (url.includes('/src/auth/') || url.includes('/src/limits/')) return 'vigil auth/limits';
  if (url.includes('/src/')) return 'vigil other';
  if (url.startsWith('node:internal/timers') || url === 'node:timers') return 'timers';
  if (url === 'node:net' || url.startsWith('node:internal/stream') || url.startsWith('node:stream') || url.startsWith('node:internal/net')) return 'node net/stream';
  if (url === 'node:events' || url.startsWith('node:internal/process/task_queues') || url.startsWith('node:internal/async_hooks')) return 'node events/ticks';
  if (url.startsWith('node:')) return 'node other';
  if (url === '') return 'native (syscalls, bindings)';
  return 'other JS';
}

const key = (cf) => `${cf.functionName || '(anonymous)'} ${(cf.url ?? '').replace(/^.*\/(node_modules\/|dist\/)/, '$1')}:${cf.lineNumber + 1}`;

function summarize(file) {
  const prof = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  // self time per node from the samples (timeDeltas[i] is the time before sample i)
  const selfUs = new Map();
  const { samples, timeDeltas } = prof;
  let t = prof.startTime;
  for (let i = 0; i < samples.length; i++) {
    t += timeDeltas[i];
    const dt = timeDeltas[i + 1] ?? 0; // time until the next sample belongs to this one
    if (t - prof.startTime < skipUs) continue;
    selfUs.set(samples[i], (selfUs.get(samples[i]) ?? 0) + dt);
  }

  const self = new Map();
  const incl = new Map();
  const cats = new Map();
  let busy = 0;
  let idle = 0;
  for (const [id, us] of selfUs) {
    const n = byId.get(id);
    const cf = n.callFrame;
    if (cf.functionName === '(idle)') {
      idle += us;
      continue;
    }
    busy += us;
    const k = key(cf);
    self.set(k, (self.get(k) ?? 0) + us);
    cats.set(category(cf), (cats.get(category(cf)) ?? 0) + us);
    // inclusive: every distinct function on the stack gets this sample once
    const seen = new Set();
    for (let at = id; at !== undefined; at = parent.get(at)) {
      const ak = key(byId.get(at).callFrame);
      if (seen.has(ak)) continue;
      seen.add(ak);
      incl.set(ak, (incl.get(ak) ?? 0) + us);
    }
  }

  const fmt = (us) => (per > 0 ? `${(us / per).toFixed(2).padStart(8)} µs` : `${(us / 1000).toFixed(1).padStart(8)} ms`);
  const pct = (us) => `${((100 * us) / busy).toFixed(1).padStart(5)} %`;
  console.log(`${file}\nbusy ${(busy / 1000).toFixed(0)} ms, idle ${(idle / 1000).toFixed(0)} ms${per > 0 ? `, per unit of ${per}: busy ${(busy / per).toFixed(1)} µs` : ''}\n`);
  console.log('by category (self time)');
  for (const [c, us] of [...cats].sort((a, b) => b[1] - a[1])) console.log(`${pct(us)} ${fmt(us)}  ${c}`);
  console.log(`\ntop ${top} by self time`);
  for (const [k, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pct(us)} ${fmt(us)}  ${k}`);
  console.log(`\ntop ${top} by inclusive time`);
  for (const [k, us] of [...incl].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pct(us)} ${fmt(us)}  ${k}`);
}

for (const file of files) summarize(file);
