#!/usr/bin/env node
// Soak: a Vigil process (or, with --cluster, two nodes on one Redis) under mixed traffic with
// churn for N minutes, its memory sampled every 10 s; after the traffic stops and three samples
// settle, the end is compared with the post-warm-up state → PASS / FAIL.
//
//   npm run soak                          # 10 minutes, single node
//   npm run soak -- --minutes 30          # longer
//   npm run soak -- --quick               # 1 minute
//   npm run soak -- --cluster             # 2 nodes + redis-server (from the PATH)
//
// Traffic (loopback only, every loop bounded by the deadline):
//   - stable subscribers (persistent sessions) on soak/# at QoS 1, soak/q2/# at QoS 2, soak/will/#;
//   - publishers: QoS 0/1/2 in turn, every 8th message retained on one of 200 state topics;
//   - churners: connect with an id from a pool of 400 (some persistent with a 5 s expiry, all
//     with a will), subscribe / unsubscribe random filters, publish a few, then DISCONNECT or
//     die abruptly (socket destroyed: the will fires).
// Memory: VmRSS from /proc/<pid>/status and vigil_nodejs_heap_size_used_bytes from /metrics.
// Tolerance: end RSS within 15 % or 20 MiB of the post-warm-up state (whichever is larger),
// and the same for the heap. Each state is a floor — the lowest of several samples (post-warm-up:
// the last 3 warm-up samples and the first of the traffic; end: the last minute of traffic and
// the quiet samples) — because one heap sample mostly says how long ago the last major GC ran
// (the heap swings 40 ↔ 120 MiB under this traffic); a leak raises the floor. Writes
// bench/results/soak-<date>.md.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { freePort } from './lib/brokers.mjs';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const CLI = path.join(ROOT, 'dist/src/cli.js');
const args = process.argv.slice(2);
const flag = (name) => args.includes(`--${name}`);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const MINUTES = flag('quick') ? 1 : opt('minutes', 10);
const CLUSTER = flag('cluster');
const SAMPLE_MS = 10_000;
const WARMUP_MS = Math.min(120_000, Math.max(20_000, MINUTES * 60_000 * 0.2));
const SETTLE_SAMPLES = 3;
const TOLERANCE = { ratio: 0.15, rssBytes: 20 * 2 ** 20, heapBytes: 20 * 2 ** 20 };
const SUBSCRIBERS = 8;
const PUBLISHERS = 4;
const PUBLISH_EVERY_MS = opt('publish-every-ms', 20);
const CHURNERS = 12;
const ID_POOL = 400;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const MiB = (b) => (b / 2 ** 20).toFixed(1);
const log = (...a) => console.log(`[${new Date().toISOString().slice(11, 19)}]`, ...a);
const children = new Set();
const cleanup = () => {
  for (const c of children) c.kill('SIGKILL');
};
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

/** Every client call is bounded: a client taken over mid-call never answers. */
function bounded(promise, ms = 5000) {
  return Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), ms).unref())]);
}

async function waitFor(cond, ms, what) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vigil-soak-redis-'));
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'everysec', '--loglevel', 'warning'], { stdio: 'ignore' }); // as shipped (docker-compose.yml)
  children.add(proc);
  await waitFor(() => new Promise((res) => {
    const s = net.connect({ port, host: '127.0.0.1' }, () => (s.destroy(), res(true)));
    s.on('error', () => res(false));
  }), 10_000, 'redis-server');
  return { url: `redis://127.0.0.1:${port}`, stop: () => (proc.kill('SIGTERM'), rmSync(dir, { recursive: true, force: true })) };
}

async function startVigil(nodeId, env) {
  const [mqttPort, metricsPort] = [await freePort(), await freePort()];
  const proc = spawn(process.execPath, [CLI], {
    env: { ...process.env, VIGIL_MQTT_PORT: String(mqttPort), VIGIL_METRICS_PORT: String(metricsPort), VIGIL_BIND: '127.0.0.1', VIGIL_METRICS_BIND: '127.0.0.1', VIGIL_LOG_LEVEL: 'warn', VIGIL_SYS_INTERVAL_S: '10', VIGIL_NODE_ID: nodeId, ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  children.add(proc);
  const node = { nodeId, pid: proc.pid, url: `mqtt://127.0.0.1:${mqttPort}`, metricsUrl: `http://127.0.0.1:${metricsPort}/metrics`, proc, exited: false };
  proc.on('exit', () => (node.exited = true));
  await waitFor(async () => {
    if (node.exited) throw new Error(`vigil ${nodeId} exited`);
    try {
      return (await fetch(`http://127.0.0.1:${metricsPort}/readyz`)).status === 200;
    } catch {
      return false;
    }
  }, 20_000, `vigil ${nodeId} ready`);
  return node;
}

function rssOf(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

async function scrape(node, names) {
  const text = await (await fetch(node.metricsUrl)).text();
  const out = {};
  for (const name of names) {
    let sum = 0;
    for (const line of text.split('\n')) if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    out[name] = sum;
  }
  return out;
}

// ---- traffic -------------------------------------------------------------------------------

const stats = { published: 0, received: 0, connects: 0, normalEnds: 0, kills: 0, willsSeen: 0, subscribes: 0, unsubscribes: 0, errors: 0, connectFailures: 0 };

function connect(url, options) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options });
    const timer = setTimeout(() => (c.end(true), reject(new Error('connect timeout'))), 6000);
    c.once('connect', () => (clearTimeout(timer), stats.connects++, resolve(c)));
    c.once('error', (e) => (clearTimeout(timer), c.end(true), reject(e)));
  });
}

const pick = (a) => a[Math.floor(Math.random() * a.length)];
const FILTERS = ['soak/+/x', 'soak/state/#', 'soak/q2/+', 'soak/#', 'other/+/y', 'soak/will/+'];

async function publisherLoop(url, i, until) {
  const c = await connect(url, { clientId: `soak-pub-${i}`, protocolVersion: i % 2 ? 5 : 4 });
  c.on('error', () => stats.errors++);
  let n = 0;
  while (Date.now() < until()) {
    const qos = n % 3;
    const retain = n % 8 === 0;
    const topic = retain ? `soak/state/${(i * 50 + n) % 200}` : qos === 2 ? `soak/q2/${i}` : `soak/p${i}/x`;
    try {
      await bounded(c.publishAsync(topic, `${i}:${n}`, { qos, retain }));
      stats.published++;
    } catch {
      stats.errors++;
    }
    n++;
    await sleep(PUBLISH_EVERY_MS);
  }
  await bounded(c.endAsync()).catch(() => undefined);
}

async function churnLoop(urls, until) {
  while (Date.now() < until()) {
    const id = `soak-churn-${Math.floor(Math.random() * ID_POOL)}`;
    const persistent = Math.random() < 0.3;
    const v5 = Math.random() < 0.5;
    let c;
    try {
      c = await connect(pick(urls), {
        clientId: id,
        protocolVersion: v5 ? 5 : 4,
        clean: !persistent,
        ...(v5 && persistent ? { properties: { sessionExpiryInterval: 5 } } : {}),
        will: { topic: `soak/will/${id}`, payload: Buffer.from('down'), qos: 1, retain: false },
      });
    } catch {
      stats.connectFailures++;
      await sleep(50);
      continue;
    }
    c.on('error', () => undefined);
    try {
      const filters = [pick(FILTERS), pick(FILTERS)];
      await bounded(c.subscribeAsync(filters, { qos: Math.floor(Math.random() * 3) }));
      stats.subscribes++;
      for (let k = 0; k < 3; k++) {
        await bounded(c.publishAsync(`soak/c/${id}`, 'x'.repeat(Math.floor(Math.random() * 2000)), { qos: k % 3 }));
        stats.published++;
      }
      await sleep(Math.random() * 300);
      await bounded(c.unsubscribeAsync(filters[0]));
      stats.unsubscribes++;
    } catch {
      stats.errors++;
    }
    if (Math.random() < 0.4) {
      c.stream.destroy(); // dies without DISCONNECT: its will fires
      c.end(true);
      stats.kills++;
    } else {
      await bounded(c.endAsync()).catch(() => c.end(true));
      stats.normalEnds++;
    }
  }
}

async function subscriber(url, i) {
  const c = await connect(url, { clientId: `soak-sub-${i}`, clean: false, protocolVersion: i % 2 ? 5 : 4, ...(i % 2 ? { properties: { sessionExpiryInterval: 300 } } : {}) });
  c.on('error', () => stats.errors++);
  c.on('message', (topic) => {
    stats.received++;
    if (topic.startsWith('soak/will/')) stats.willsSeen++;
  });
  await c.subscribeAsync({ 'soak/#': { qos: 1 }, 'soak/q2/#': { qos: 2 }, 'soak/will/#': { qos: 1 } });
  return c;
}

// ---- main ----------------------------------------------------------------------------------

async function main() {
  if (!existsSync(CLI)) spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', ROOT], { stdio: 'inherit' });
  const total = MINUTES * 60_000;
  log(`soak: ${MINUTES} min, ${CLUSTER ? '2 nodes + Redis' : 'single node'}, warm-up ${WARMUP_MS / 1000} s, sample every ${SAMPLE_MS / 1000} s`);
  const redis = CLUSTER ? await startRedis() : undefined;
  const prefix = `soak${process.pid}`;
  const nodes = CLUSTER
    ? [await startVigil('soak-a', { VIGIL_REDIS_URL: redis.url, VIGIL_REDIS_PREFIX: prefix }), await startVigil('soak-b', { VIGIL_REDIS_URL: redis.url, VIGIL_REDIS_PREFIX: prefix })]
    : [await startVigil('soak', {})];
  const urls = nodes.map((n) => n.url);
  const samples = [];
  const t0 = Date.now();
  let phase = 'warm-up';
  const sample = async () => {
    const row = { t: Math.round((Date.now() - t0) / 1000), phase, nodes: [] };
    for (const n of nodes) {
      const m = await scrape(n, ['vigil_nodejs_heap_size_used_bytes', 'vigil_connections_current', 'vigil_sessions_current', 'vigil_retained_messages', 'vigil_queued_messages']);
      row.nodes.push({ rss: rssOf(n.pid), heap: m.vigil_nodejs_heap_size_used_bytes, conns: m.vigil_connections_current, sessions: m.vigil_sessions_current, retained: m.vigil_retained_messages, queued: m.vigil_queued_messages });
    }
    samples.push(row);
    log(`t+${row.t}s ${phase}: ${row.nodes.map((r, i) => `${nodes[i].nodeId} rss ${MiB(r.rss)} MiB heap ${MiB(r.heap)} MiB conns ${r.conns} sessions ${r.sessions}`).join(' | ')}; published ${stats.published}, received ${stats.received}, kills ${stats.kills}, wills seen ${stats.willsSeen}`);
    return row;
  };
  const sampler = setInterval(() => void sample().catch((e) => log('sample failed', e.message)), SAMPLE_MS);

  const subs = await Promise.all(Array.from({ length: SUBSCRIBERS }, (_, i) => subscriber(urls[i % urls.length], i)));
  const trafficEnd = t0 + total;
  const until = () => trafficEnd;
  const loops = [
    ...Array.from({ length: PUBLISHERS }, (_, i) => publisherLoop(urls[i % urls.length], i, until)),
    ...Array.from({ length: CHURNERS }, () => churnLoop(urls, until)),
  ];
  await sleep(WARMUP_MS);
  phase = 'traffic';
  const warm = await sample();
  await Promise.all(loops);
  phase = 'quiet';
  log(`traffic stopped; letting ${SETTLE_SAMPLES} samples settle`);
  await sleep(SETTLE_SAMPLES * SAMPLE_MS + 1000);
  clearInterval(sampler);
  const end = await sample();
  const crashed = nodes.filter((n) => n.exited).map((n) => n.nodeId);

  // verdict per node, on floors (see the header)
  const floor = (rows, i) => ({ rss: Math.min(...rows.map((s) => s.nodes[i].rss)), heap: Math.min(...rows.map((s) => s.nodes[i].heap)) });
  const warmRows = [...samples.filter((s) => s.phase === 'warm-up').slice(-3), warm];
  const endRows = [...samples.filter((s) => s.phase === 'traffic').slice(-6), ...samples.filter((s) => s.phase === 'quiet' && s !== end), end];
  const verdicts = nodes.map((n, i) => {
    const w = floor(warmRows, i);
    const e = floor(endRows, i);
    const rssLimit = w.rss + Math.max(w.rss * TOLERANCE.ratio, TOLERANCE.rssBytes);
    const heapLimit = w.heap + Math.max(w.heap * TOLERANCE.ratio, TOLERANCE.heapBytes);
    const traffic = samples.filter((s) => s.phase === 'traffic').map((s) => s.nodes[i]);
    const peak = Math.max(...traffic.map((r) => r.rss));
    return { node: n.nodeId, w, e, rssLimit, heapLimit, peak, pass: e.rss <= rssLimit && e.heap <= heapLimit };
  });
  const pass = crashed.length === 0 && verdicts.every((v) => v.pass);

  await Promise.all(subs.map((c) => bounded(c.endAsync()).catch(() => undefined)));
  for (const n of nodes) n.proc.kill('SIGTERM');
  await sleep(500);
  redis?.stop();

  const lines = [];
  lines.push(`# Vigil soak — ${new Date().toISOString()}`, '');
  lines.push(`- Duration: ${MINUTES} min of traffic (${WARMUP_MS / 1000} s warm-up), then ${SETTLE_SAMPLES} quiet samples; ${CLUSTER ? '2 nodes on one Redis' : 'single node'}; Node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'})`);
  lines.push(`- Traffic: ${SUBSCRIBERS} persistent subscribers, ${PUBLISHERS} publishers every ${PUBLISH_EVERY_MS} ms (QoS 0/1/2, every 8th retained on 200 topics), ${CHURNERS} churners on a pool of ${ID_POOL} client ids`);
  lines.push(`- Totals: published ${stats.published}, received ${stats.received}, connects ${stats.connects}, normal DISCONNECTs ${stats.normalEnds}, abrupt kills ${stats.kills}, wills received ${stats.willsSeen}, subscribes ${stats.subscribes}, unsubscribes ${stats.unsubscribes}, client errors ${stats.errors}, failed connects ${stats.connectFailures}`);
  lines.push(`- Tolerance: end RSS ≤ post-warm-up + max(${TOLERANCE.ratio * 100} %, ${MiB(TOLERANCE.rssBytes)} MiB); end heap ≤ post-warm-up + max(${TOLERANCE.ratio * 100} %, ${MiB(TOLERANCE.heapBytes)} MiB). Both sides are floors: the lowest sample of the last 3 warm-up samples and the first traffic one, and of the last minute of traffic and the quiet samples (one heap sample mostly tells when the last major GC ran).`, '');
  lines.push('| node | RSS floor post-warm-up | RSS peak (traffic) | RSS floor end | heap floor post-warm-up | heap floor end | verdict |', '| --- | --- | --- | --- | --- | --- | --- |');
  for (const v of verdicts) lines.push(`| ${v.node} | ${MiB(v.w.rss)} MiB | ${MiB(v.peak)} MiB | ${MiB(v.e.rss)} MiB (limit ${MiB(v.rssLimit)}) | ${MiB(v.w.heap)} MiB | ${MiB(v.e.heap)} MiB (limit ${MiB(v.heapLimit)}) | ${v.pass ? 'PASS' : 'FAIL'} |`);
  if (crashed.length) lines.push('', `Node(s) exited during the run: ${crashed.join(', ')}`);
  lines.push('', '## Samples', '', '| t (s) | phase | ' + nodes.map((n) => `${n.nodeId} RSS MiB | heap MiB | conns | sessions | retained | queued`).join(' | ') + ' |');
  lines.push('| ' + ['---', '---', ...nodes.flatMap(() => ['---', '---', '---', '---', '---', '---'])].join(' | ') + ' |');
  for (const s of samples) lines.push(`| ${s.t} | ${s.phase} | ${s.nodes.map((r) => `${MiB(r.rss)} | ${MiB(r.heap)} | ${r.conns} | ${r.sessions} | ${r.retained} | ${r.queued}`).join(' | ')} |`);
  const verdictLine = `soak: ${pass ? 'PASS' : 'FAIL'} — ${verdicts.map((v) => `${v.node} RSS ${MiB(v.w.rss)} → ${MiB(v.e.rss)} MiB, heap ${MiB(v.w.heap)} → ${MiB(v.e.heap)} MiB`).join('; ')}`;
  lines.push('', verdictLine, '');
  mkdirSync(path.join(ROOT, 'bench/results'), { recursive: true });
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  const file = path.join(ROOT, `bench/results/soak-${stamp}${CLUSTER ? '-cluster' : ''}.md`);
  writeFileSync(file, lines.join('\n'));
  log(`report: ${path.relative(ROOT, file)}`);
  console.log(verdictLine);
  process.exit(pass ? 0 : 1);
}

const hardStop = setTimeout(() => {
  console.error('soak: hard time limit reached');
  process.exit(2);
}, (MINUTES + 3) * 60_000 + WARMUP_MS);
hardStop.unref();
main().catch((err) => {
  console.error('soak failed:', err);
  process.exit(1);
});
