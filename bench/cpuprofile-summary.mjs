// Self time per function and per category from V8 .cpuprofile files (node --cpu-prof writes one
// per thread: the main thread and each worker thread), one table per file:
//
//   node bench/cpuprofile-summary.mjs /tmp/vigil-prof/*.cpuprofile [--top 30] [--per N]
//
// --per N divides by N (connections, messages) and prints µs per unit instead of ms.
// Caveat: V8 samples a thread by wall clock. On a core shared by several threads (the broker
// pinned to one CPU with its auth threads), a thread waiting for the CPU is charged to where it
// stopped, e.g. postMessage right after waking the main thread. For CPU per thread, read
// /proc/<pid>/task/<tid>/stat; these tables are for where a thread's time goes, not how much.
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(name);
  if (i < 0) return def;
  const v = Number(args[i + 1]);
  args.splice(i, 2);
  return v;
};
const top = opt('--top', 30);
const per = opt('--per', 0);
if (args.length === 0) {
  console.error('usage: node bench/cpuprofile-summary.mjs FILE.cpuprofile... [--top N] [--per N]');
  process.exit(2);
}

function category({ functionName, url }) {
  if (functionName === '(garbage collector)') return 'gc';
  if (functionName === '(idle)' || functionName === '(program)') return functionName;
  if (url.includes('/dist/src/')) return `vigil ${url.split('/dist/src/')[1].split('/')[0]}`;
  if (url.includes('node_modules/')) return `npm ${url.split('node_modules/').pop().split('/')[0]}`;
  if (url.startsWith('node:')) return url.replace(/^node:(internal\/)?/, 'node ').split('/')[0];
  return url === '' ? `native ${functionName}` : url;
}

const shortUrl = (url) => url.replace(/.*\/(dist|node_modules)\//, '$1/');

for (const file of args) {
  const profile = JSON.parse(readFileSync(file, 'utf8'));
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const byFunction = new Map();
  const byCategory = new Map();
  let busy = 0;
  let idle = 0;
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i] ?? 0;
    const frame = nodes.get(id).callFrame;
    if (frame.functionName === '(idle)') {
      idle += dt;
      return;
    }
    busy += dt;
    const key = `${frame.functionName || '(anonymous)'} ${shortUrl(frame.url)}:${frame.lineNumber + 1}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + dt);
    const c = category(frame);
    byCategory.set(c, (byCategory.get(c) ?? 0) + dt);
  });
  const amount = (us) => (per > 0 ? `${(us / per).toFixed(1)} µs` : `${(us / 1000).toFixed(1)} ms`).padStart(10);
  const table = (m, n) =>
    [...m].sort((a, b) => b[1] - a[1]).slice(0, n).forEach(([k, us]) => console.log(`${amount(us)} ${((100 * us) / busy).toFixed(1).padStart(5)} %  ${k}`));
  console.log(`\n${file}\n  busy ${(busy / 1000).toFixed(0)} ms, idle ${(idle / 1000).toFixed(0)} ms${per > 0 ? `, per unit of ${per}` : ''}`);
  console.log('-- categories (self time, share of busy)');
  table(byCategory, 20);
  console.log('-- functions (self time)');
  table(byFunction, top);
}
