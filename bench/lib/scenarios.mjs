// The scenarios: what each one runs, on which brokers, and which number is its headline.
// A scenario's run(ctx) starts fresh broker process(es), drives the load generator and
// returns one run's numbers; run.mjs repeats it (A B A B ...) and takes medians.
import { startBroker, startRedis } from './brokers.mjs';
import { runLoad } from './load.mjs';
import { Histogram } from './histogram.mjs';
import { makeJwtMaterial, measureVerifyRate } from './jwt.mjs';
import { nowUs } from './clock.mjs';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import net from 'node:net';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Durations and sizes; --quick trades precision for a ≤ 3 minute total. */
export function profile(quick) {
  return quick
    ? { warmupMs: 1000, measureMs: 3000, stormMs: 3000, idleConnections: 10000, retainedTopics: 10000, retainedRounds: 1, jwtTokens: 48000, verifyMs: 1000, willClients: 20, snapshotTopics: 10000, fleetWills: 1000, fleetClients: 2000, sweepWindows: [16, 256], sweepWarmupMs: 500, sweepMeasureMs: 1500 }
    : { warmupMs: 2000, measureMs: 8000, stormMs: 8000, idleConnections: 10000, retainedTopics: 10000, retainedRounds: 3, jwtTokens: 150000, verifyMs: 2000, willClients: 40, snapshotTopics: 100000, fleetWills: 10000, fleetClients: 10000, sweepWindows: [16, 64, 256, 1024], sweepWarmupMs: 1000, sweepMeasureMs: 3000 };
}

const NODE_TIMEOUT_MS = 3000;
const HEARTBEAT_MS = 1000;

/** Parses a taskset CPU list ("0", "0-1", "0,2") into CPU numbers. */
function cpuList(spec) {
  const out = [];
  for (const part of String(spec).split(',')) {
    const [a, b] = part.split('-').map(Number);
    for (let c = a; c <= (Number.isFinite(b) ? b : a); c++) out.push(c);
  }
  return out;
}

/** Busy ticks (everything but idle and iowait) per CPU, from /proc/stat. */
function busyTicks(cpus) {
  const stat = readFileSync('/proc/stat', 'utf8');
  let busy = 0;
  for (const c of cpus) {
    const line = stat.split('\n').find((l) => l.startsWith(`cpu${c} `));
    if (!line) return NaN;
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    busy += f[0] + f[1] + f[2] + f[5] + f[6] + f[7]; // user nice system irq softirq steal
  }
  return busy;
}

/**
 * Samples over the measurement window: the brokers' own CPU (summed over `procs`) and how
 * busy the broker and generator CPUs were in total, so load from other processes on the
 * machine shows up as "other load" instead of silently skewing the numbers.
 */
function cpuSampler(procs, warmupMs, measureMs, ctx) {
  const brokerCpus = cpuList(ctx.brokerCpus);
  const genCpus = cpuList(ctx.genCpus);
  const read = () => {
    const split = procs.map((p) => p.cpuSplit());
    return {
      each: split.map((c) => c.user + c.system),
      broker: split.reduce((a, c) => a + c.user + c.system, 0),
      brokerUser: split.reduce((a, c) => a + c.user, 0),
      brokerSystem: split.reduce((a, c) => a + c.system, 0),
      brokerCpuBusy: busyTicks(brokerCpus) / 100,
      genCpuBusy: busyTicks(genCpus) / 100,
      at: Date.now(),
    };
  };
  let start = null;
  let end = null;
  const timers = [];
  return {
    onGo() {
      timers.push(setTimeout(() => { start = read(); }, warmupMs));
      timers.push(setTimeout(() => { end = read(); }, warmupMs + measureMs));
    },
    /** For runs without a fixed window: sample now as start / end. */
    begin() { start = read(); },
    finish() { end = read(); },
    /** brokerCpuPct (= brokerUserPct + brokerSystemPct); brokerCpuBusyPct / genCpuBusyPct: total use of those CPUs, % of one core. */
    stats() {
      for (const t of timers) clearTimeout(t);
      // the window's end timer can lose the race with a generator that exits on time (a busy
      // bench process fires timers late): the run has just ended, sample now
      if (start && !end) end = read();
      if (!start || !end || end.at <= start.at) return { brokerCpuPct: NaN, brokerUserPct: NaN, brokerSystemPct: NaN, brokerCpuBusyPct: NaN, genCpuBusyPct: NaN };
      const secs = (end.at - start.at) / 1000;
      // several processes (the cluster scenarios: node A, node B, Redis): each one's own share,
      // so a cross-node result says which process is the long pole and what each costs per message
      const procCpuPct = procs.length > 1 ? Object.fromEntries(procs.map((p, i) => [p.name, (100 * (end.each[i] - start.each[i])) / secs])) : undefined;
      return {
        ...(procCpuPct ? { procCpuPct } : {}),
        brokerCpuPct: (100 * (end.broker - start.broker)) / secs,
        brokerUserPct: (100 * (end.brokerUser - start.brokerUser)) / secs,
        brokerSystemPct: (100 * (end.brokerSystem - start.brokerSystem)) / secs,
        brokerCpuBusyPct: (100 * (end.brokerCpuBusy - start.brokerCpuBusy)) / secs,
        genCpuBusyPct: (100 * (end.genCpuBusy - start.genCpuBusy)) / secs,
      };
    },
  };
}

/**
 * A flow run's CPU: `otherLoad`'s fields and CPU per delivered message, of all the measured
 * processes (`cpuUsPerMsg`) and, when there are several, of each (`cpuUsPerMsg.vigil-a`,
 * `cpuUsPerMsg.vigil-b`, `cpuUsPerMsg.redis`): flat numbers, so the report's medians cover them.
 */
function flowCpu(cpu, gen, msgsPerSec) {
  const out = { ...otherLoad(cpu, gen), cpuUsPerMsg: (cpu.brokerCpuPct * 1e4) / msgsPerSec };
  for (const [name, pct] of Object.entries(cpu.procCpuPct ?? {})) out[`cpuUsPerMsg.${name}`] = (pct * 1e4) / msgsPerSec;
  return out;
}

/** Load on the benchmark CPUs that is neither the broker nor the generator. */
function otherLoad(cpu, gen) {
  return {
    ...cpu,
    otherLoadPct: Math.max(0, cpu.brokerCpuBusyPct - cpu.brokerCpuPct) + Math.max(0, cpu.genCpuBusyPct - gen.genCpuPct),
  };
}

function genCpu(results) {
  const pcts = results.map((r) => (r.wallUs > 0 ? (100 * r.cpuUs) / r.wallUs : 0));
  return { genCpuPct: pcts.reduce((a, b) => a + b, 0), genCpuMaxWorkerPct: Math.max(...pcts) };
}

function mergeHist(results) {
  const h = new Histogram();
  for (const r of results) h.merge(Histogram.fromJSON(r.hist));
  return h;
}

async function stopAll(procs) {
  // the brokers before their Redis: a node that loses Redis while stopping can outlast the
  // 3 s SIGTERM grace and be killed, and a --cpu-prof profile is written only on a clean exit
  const redis = procs.filter((p) => p.name.startsWith('redis'));
  await Promise.all(procs.filter((p) => !redis.includes(p)).map((p) => p.stop()));
  await Promise.all(redis.map((p) => p.stop()));
}

/**
 * Publishers/subscribers with bounded windows: gen/loadgen.c when the harness built it
 * (`cgen` is the same layout in its command-line terms), else gen/worker.mjs runFlows.
 */
async function flowRun(ctx, { flows, subs, procs, pubPort, subPort, cgen }) {
  if (ctx.gen?.kind === 'c' && cgen) return cFlowRun(ctx, { procs, pubPort, subPort, cgen });
  const { prof, shards } = ctx;
  const sampler = cpuSampler(procs, prof.warmupMs, prof.measureMs, ctx);
  const { results } = await runLoad({
    kind: 'flows',
    shards,
    params: () => ({
      flows: flows.map((f) => ({ ...f, pubPort })),
      subs: subs.map((s) => ({ ...s, port: subPort })),
      warmupMs: prof.warmupMs,
      measureMs: prof.measureMs,
    }),
    setupTimeoutMs: 30000,
    runTimeoutMs: prof.warmupMs + prof.measureMs + 20000,
    onGo: () => sampler.onGo(),
  });
  for (const p of procs) if (p.exited) throw new Error(`${p.name} exited during the run (${JSON.stringify(p.exitInfo)})\n${p.logTail()}`);
  const received = results.reduce((a, r) => a + r.received, 0);
  const sentInWindow = results.reduce((a, r) => a + r.sentInWindow, 0);
  const h = mergeHist(results);
  const msgsPerSec = received / (prof.measureMs / 1000);
  const gen = genCpu(results);
  return {
    value: msgsPerSec,
    msgsPerSec,
    p50Us: h.quantile(0.5),
    p99Us: h.quantile(0.99),
    publishedPerSec: sentInWindow / (prof.measureMs / 1000),
    stalls: results.reduce((a, r) => a + r.stalls, 0),
    generator: 'node',
    ...gen,
    ...flowCpu(sampler.stats(), gen, msgsPerSec),
  };
}

/** Runs bench/gen/loadgen (one process, pinned to the generator CPUs) for one flow run. */
async function cFlowRun(ctx, { procs, pubPort, subPort, cgen }) {
  const { prof } = ctx;
  const sampler = cpuSampler(procs, prof.warmupMs, prof.measureMs, ctx);
  const argv = [
    '-c', ctx.genCpus, ctx.gen.bin,
    '--port', String(pubPort), '--sub-port', String(subPort),
    '--scenario', cgen.scenario, '--qos', String(cgen.qos),
    '--pubs', String(cgen.pubs), '--subs', String(cgen.subs), '--inflight', String(cgen.inflight),
    '--size', '64', '--topic', cgen.topic,
    '--warmup-ms', String(prof.warmupMs), '--duration-ms', String(prof.measureMs),
    '--setup-timeout-ms', '30000', '--rate', '0', '--turn-us', String(ctx.gen.turnUs ?? 0),
    ...(cgen.subV5Alias === undefined ? [] : ['--sub-v5-alias', String(cgen.subV5Alias)]),
    ...(cgen.persistentPublishers ? ['--pub-persistent'] : []),
  ];
  const r = await runLoadgen(argv, 30000 + prof.warmupMs + prof.measureMs + 20000, () => sampler.onGo());
  for (const p of procs) if (p.exited) throw new Error(`${p.name} exited during the run (${JSON.stringify(p.exitInfo)})\n${p.logTail()}`);
  if (!r.ok || r.errors > 0) throw new Error(`C load generator: ${r.error || 'failed'}${r.errors > 1 ? ` (+${r.errors - 1} more)` : ''}`);
  const msgsPerSec = r.received / (prof.measureMs / 1000);
  const genCpuPct = r.wallUs > 0 ? (100 * r.cpuUs) / r.wallUs : NaN;
  const gen = { genCpuPct, genCpuMaxWorkerPct: genCpuPct };
  return {
    value: msgsPerSec,
    msgsPerSec,
    p50Us: r.p50Us ?? NaN,
    p99Us: r.p99Us ?? NaN,
    publishedPerSec: r.sentInWindow / (prof.measureMs / 1000),
    stalls: r.stalls,
    bytesPerMsg: r.received > 0 ? r.rxPublishBytes / r.received : NaN,
    // QoS 1/2: PUBLISH → PUBACK / PUBCOMP at the publisher (what WAIT adds to)
    ackP50Us: r.ackP50Us ?? NaN,
    ackP99Us: r.ackP99Us ?? NaN,
    generator: 'c',
    ...gen,
    ...flowCpu(sampler.stats(), gen, msgsPerSec),
  };
}

/**
 * Spawns the C generator (argv is for taskset), calls onGo at its {"event":"go"} line and
 * resolves with its result line. Killed after timeoutMs whatever happens.
 */
export function runLoadgen(argv, timeoutMs, onGo, onEvent = () => undefined) {
  return new Promise((resolve, reject) => {
    const child = spawn('taskset', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let result = null;
    let settled = false;
    const finish = (fn, v) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      fn(v);
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish(reject, new Error(`C load generator timed out after ${timeoutMs} ms${err ? `: ${err.trim().split('\n').slice(-3).join(' / ')}` : ''}`));
    }, timeoutMs);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      out += chunk;
      let nl;
      while ((nl = out.indexOf('\n')) >= 0) {
        const line = out.slice(0, nl).trim();
        out = out.slice(nl + 1);
        if (!line) continue;
        let msg;
        try {
          msg = JSON.parse(line);
        } catch {
          err += `${line}\n`;
          continue;
        }
        if (msg.event === 'go') onGo();
        else if (msg.event) onEvent(msg);
        else result = msg;
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => { if (err.length < 4000) err += chunk; });
    child.on('error', (e) => finish(reject, new Error(`C load generator: ${e.message}`)));
    child.on('close', (code, signal) => {
      if (result) finish(resolve, result);
      else finish(reject, new Error(`C load generator exited (${code ?? signal}) without a result${err ? `: ${err.trim().split('\n').slice(-3).join(' / ')}` : ''}`));
    });
  });
}

function pairsLayout(n, qos, window, shards, prefix) {
  const flows = [];
  const subs = [];
  for (let i = 0; i < n; i++) {
    const topic = `${prefix}/${i}`;
    flows.push({ index: i, topic, qos, window, shard: i % shards });
    subs.push({ index: i, filter: topic, qos, shard: i % shards, tracks: [i] });
  }
  return { flows, subs };
}

async function single(ctx, fn, env = {}) {
  const b = await startBroker(ctx.broker, { cpus: ctx.brokerCpus, logDir: ctx.logDir, env });
  try {
    return await fn(b);
  } finally {
    await b.stop();
  }
}

/**
 * Two Vigil nodes on one Redis; everything on the broker CPUs. `replica`: the Redis has a
 * replica (started and in sync before the nodes); `env`: extra settings for both nodes.
 */
async function cluster(ctx, fn, { replica = false, env: extra = {}, redisCpus = ctx.brokerCpus } = {}) {
  const redis = await startRedis({ cpus: redisCpus, logDir: ctx.logDir });
  const procs = [redis];
  try {
    if (replica) {
      procs.push(await startRedis({ cpus: ctx.brokerCpus, logDir: ctx.logDir, replicaOf: redis.port }));
      await replicaInSync(redis.port);
    }
    const env = {
      VIGIL_REDIS_URL: `redis://127.0.0.1:${redis.port}`,
      VIGIL_REDIS_PREFIX: `bench${Date.now()}`,
      VIGIL_NODE_TIMEOUT_MS: String(NODE_TIMEOUT_MS),
      VIGIL_HEARTBEAT_MS: String(HEARTBEAT_MS),
      ...extra,
    };
    const a = await startBroker('vigil', { cpus: ctx.brokerCpus, logDir: ctx.logDir, label: 'vigil-a', env: { ...env, VIGIL_NODE_ID: 'bench-a' } });
    procs.push(a);
    const b = await startBroker('vigil', { cpus: ctx.brokerCpus, logDir: ctx.logDir, label: 'vigil-b', env: { ...env, VIGIL_NODE_ID: 'bench-b' } });
    procs.push(b);
    return await fn({ a, b, redis });
  } finally {
    await stopAll(procs);
  }
}

/** Waits (bounded) until the master on `port` reports a replica online. */
async function replicaInSync(port) {
  const deadline = Date.now() + 20000;
  for (;;) {
    const info = await new Promise((resolve) => {
      const s = net.connect({ port, host: '127.0.0.1' }, () => s.write('INFO replication\r\n'));
      let text = '';
      s.on('data', (d) => {
        text += d;
        if (text.includes('master_repl_offset')) s.destroy();
      });
      s.on('close', () => resolve(text));
      s.on('error', () => resolve(''));
      s.setTimeout(2000, () => s.destroy());
    });
    if (/slave0:.*state=online/.test(info)) return;
    if (Date.now() > deadline) throw new Error('Redis replica not in sync after 20 s');
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Cross-node QoS 1 (or 2) pairs: 8 publishers on node A → 8 subscribers on node B, 64 in flight. */
function crossNodePairs(ctx, qos, topic, { persistentPublishers = false } = {}) {
  return ({ a, b, redis }) => {
    // the Node generator speaks QoS 0/1 only
    if (qos === 2 && ctx.gen?.kind !== 'c') throw new Error('QoS 2 needs the C load generator (bench/gen/loadgen.c, gcc)');
    const { flows, subs } = pairsLayout(8, qos, 64, ctx.shards, topic);
    const cgen = { scenario: 'pairs', qos, pubs: 8, subs: 8, inflight: 64, topic, persistentPublishers };
    return flowRun(ctx, { flows, subs, procs: [a, b, redis], pubPort: a.port, subPort: b.port, cgen });
  };
}

/**
 * The policy of the delivery-authorization scenarios (issue 12): ten roles with deny rules.
 * The generator connects anonymously (VIGIL_AUTH=none), so its clients hold the role
 * `anonymous`: every PUBLISH and every delivery is checked against grants and denies of the
 * bench topics; the nine other roles (several with %u/%c rules) are what a real policy holds.
 */
function benchPolicyFile(ctx) {
  const roles = { anonymous: { publish: ['bench/#'], subscribe: ['bench/#'], deny: { publish: ['bench/forbidden/#'], subscribe: ['bench/secret/#', 'bench/+/private'] } } };
  for (let i = 1; i < 10; i++) {
    roles[`role-${i}`] = {
      publish: [`trusted/%u/r${i}/#`, `fleet/+/r${i}/state`],
      subscribe: [`trusted/%u/r${i}/cmd/#`, `fleet/#`],
      deny: { publish: [`trusted/%u/r${i}/secret`], subscribe: [`fleet/secret/r${i}/#`, `fleet/%c/private`] },
    };
  }
  const file = path.join(ctx.work, 'bench-acl.json');
  writeFileSync(file, JSON.stringify({ version: 1, roles, deny: { publish: ['$SYS/#'], subscribe: ['bench/audit/#'] } }));
  return file;
}

/** A fleet-style topic, long enough that an alias matters (57 bytes). */
const FLEET_TOPIC = 'fleet/region-eu-west-1/site-0042/vehicle-000123/telemetry';

export const SCENARIOS = [
  {
    id: 'qos0-pairs',
    mosquittoNagle: true,
    title: 'QoS 0 pairs',
    what: '8 publishers → 8 subscribers, one topic each, 64 B payload, window 64 per publisher',
    metric: { key: 'msgsPerSec', unit: 'msg/s', higherIsBetter: true },
    run: (ctx) => single(ctx, (b) => {
      const { flows, subs } = pairsLayout(8, 0, 64, ctx.shards, 'bench/q0');
      const cgen = { scenario: 'pairs', qos: 0, pubs: 8, subs: 8, inflight: 64, topic: 'bench/q0' };
      return flowRun(ctx, { flows, subs, procs: [b], pubPort: b.port, subPort: b.port, cgen });
    }),
  },
  {
    id: 'qos1-pairs',
    mosquittoNagle: true,
    title: 'QoS 1 pairs',
    what: '8 publishers → 8 subscribers, QoS 1 end to end, 64 unacknowledged PUBLISHes per publisher',
    metric: { key: 'msgsPerSec', unit: 'msg/s', higherIsBetter: true },
    run: (ctx) => single(ctx, (b) => {
      const { flows, subs } = pairsLayout(8, 1, 64, ctx.shards, 'bench/q1');
      const cgen = { scenario: 'pairs', qos: 1, pubs: 8, subs: 8, inflight: 64, topic: 'bench/q1' };
      return flowRun(ctx, { flows, subs, procs: [b], pubPort: b.port, subPort: b.port, cgen });
    }),
  },
  {
    id: 'fanout',
    mosquittoNagle: true,
    title: 'Fan-out 1 → 100',
    what: '1 publisher, 100 subscribers on its topic, QoS 0, window 16 messages (1,600 deliveries)',
    metric: { key: 'msgsPerSec', unit: 'msg/s', higherIsBetter: true },
    run: (ctx) => single(ctx, (b) => {
      const flows = [{ index: 0, topic: 'bench/fanout', qos: 0, window: 16, shard: 0 }];
      const subs = Array.from({ length: 100 }, (_, j) => ({ index: j, filter: 'bench/fanout', qos: 0, shard: j % ctx.shards, tracks: j === 0 ? [0] : [] }));
      const cgen = { scenario: 'fanout', qos: 0, pubs: 1, subs: 100, inflight: 16, topic: 'bench/fanout' };
      return flowRun(ctx, { flows, subs, procs: [b], pubPort: b.port, subPort: b.port, cgen });
    }),
  },
  // issue 12: the same loads with a policy (every publish and every delivery authorized),
  // compared with the runs above in the same bench run; the goal is within 10 %
  {
    id: 'qos0-pairs-acl',
    title: 'QoS 0 pairs, 10-role ACL',
    what: 'as qos0-pairs, with VIGIL_ACL: 10 roles with deny rules; every publish and every delivery authorized',
    brokers: ['vigil'],
    metric: { key: 'msgsPerSec', unit: 'msg/s', higherIsBetter: true },
    run: (ctx) => single(ctx, (b) => {
      const { flows, subs } = pairsLayout(8, 0, 64, ctx.shards, 'bench/q0');
      const cgen = { scenario: 'pairs', qos: 0, pubs: 8, subs: 8, inflight: 64, topic: 'bench/q0' };
      return flowRun(ctx, { flows, subs, procs: [b], pubPort: b.port, subPort: b.port, cgen });
    }, { VIGIL_ACL: benchPolicyFile(ctx) }),
  },
  {
    id: 'fanout-acl',
    title: 'Fan-out 1 → 100, 10-role ACL',
    what: 'as fanout, with VIGIL_ACL: 10 roles with deny rules; each of the 1,600 deliveries in flight authorized',
    brokers: ['vigil'],
    metric: { key: 'msgsPerSec', unit: 'msg/s', higherIsBetter: true },
    run: (ctx) => single(ctx, (b) => {
      const flows = [{ index: 0, topic: 'bench/fanout', qos: 0, window: 16, shard: 0 }];
      const subs = Array.from({ length: 100 }, (_, j) => ({ index: j, filter: 'bench/fanout', qos: 0, shard: j % ctx.shards, tracks: j === 0 ? [0] : [] }));
      const cgen = { scenario: 'fanout', qos: 0, pubs: 1, subs: 100, inflight: 16, topic: 'bench/fanout' };
      return flowRun(ctx, { flows, subs, procs: [b], pubPort: b.port, subPort: b.port, cgen });
    }, { VIGIL_ACL: benchPolicyFile(ctx) }),
  },
  ...[
    { id: 'fanout-v5', aliases: 0, title: 'Fan-out 1 → 100, MQTT 5, long topic, no aliases' },
    { id: 'fanout-v5-aliases', aliases: 16, title: 'Fan-out 1 → 100, MQTT 5, long topic, topic aliases' },
  ].map(({ id, aliases, title }) => ({
    // the pair measures outgoing topic aliases: the same load, subscribers offering Topic
    // Alias Maximum 16 or none; bytesPerMsg is what each delivery cost on the wire
    id,
    title,
    what: `as fanout, subscribers on MQTT 5 with Topic Alias Maximum ${aliases}, topic ${FLEET_TOPIC.length} B; C generator only`,
    brokers: ['vigil'],
    metric: { key: 'msgsPerSec', unit: 'msg/s', higherIsBetter: true },
    run: (ctx) => single(ctx, (b) => {
      if (ctx.gen?.kind !== 'c') throw new Error('needs the C generator (--gen c): the Node generator has no MQTT 5 subscribers');
      const cgen = { scenario: 'fanout', qos: 0, pubs: 1, subs: 100, inflight: 16, topic: FLEET_TOPIC, subV5Alias: aliases };
      return flowRun(ctx, { flows: [], subs: [], procs: [b], pubPort: b.port, subPort: b.port, cgen });
    }),
  })),
  {
    id: 'fanin',
    title: 'Fan-in 100 → 1',
    what: '100 publishers on their own topics, 1 subscriber on bench/fanin/+, QoS 0, window 8 per publisher',
    metric: { key: 'msgsPerSec', unit: 'msg/s', higherIsBetter: true },
    run: (ctx) => single(ctx, (b) => {
      const flows = Array.from({ length: 100 }, (_, i) => ({ index: i, topic: `bench/fanin/${i}`, qos: 0, window: 8, shard: 0 }));
      const subs = [{ index: 0, filter: 'bench/fanin/+', qos: 0, shard: 0, tracks: flows.map((f) => f.index) }];
      const cgen = { scenario: 'fanin', qos: 0, pubs: 100, subs: 1, inflight: 8, topic: 'bench/fanin' };
      return flowRun(ctx, { flows, subs, procs: [b], pubPort: b.port, subPort: b.port, cgen });
    }),
  },
  {
    id: 'connect-storm',
    title: 'Connect storm (anonymous)',
    what: '≤ 100 CONNECTs outstanding (clean session, no auth), each CONNECT → CONNACK → DISCONNECT (C generator: 100 lanes; Node: rounds of 100); broker CPU per connection reported',
    metric: { key: 'connectsPerSec', unit: 'conn/s', higherIsBetter: true },
    run: (ctx) => single(ctx, (b) => stormRun(ctx, b, null)),
  },
  {
    // the floor of connect-storm: the same storm against a bare Node net server on the broker
    // CPUs (reported in the Vigil column), so Vigil's own share per CONNECT is visible
    id: 'bare-node-floor',
    title: 'Connect storm against a bare Node net server (the floor)',
    what: 'connect-storm against bench/brokers/bare-node-floor.mjs (accept, read, fixed CONNACK, end; no MQTT): what Node and the kernel cost per connection; shown in the Vigil column',
    brokers: ['vigil'],
    metric: { key: 'connectsPerSec', unit: 'conn/s', higherIsBetter: true },
    run: async (ctx) => {
      const f = await startBroker('bare-node-floor', { cpus: ctx.brokerCpus, logDir: ctx.logDir });
      try {
        return await stormRun(ctx, f, null);
      } finally {
        await f.stop();
      }
    },
  },
  {
    id: 'jwt-storm',
    title: 'Connect storm (RS256 JWT)',
    what: 'as the anonymous storm, every CONNECT carrying a distinct RS256 JWT as password; compared with raw node:crypto RS256 verify/s on the broker CPU',
    brokers: ['vigil'],
    metric: { key: 'connectsPerSec', unit: 'conn/s', higherIsBetter: true },
    needs: 'jwt',
    run: async (ctx) => {
      const verify = await measureVerifyRate({ cpus: ctx.brokerCpus, tokensPath: ctx.jwt.tokensPath, pubPath: ctx.jwt.pubPath, durationMs: ctx.prof.verifyMs });
      const env = { VIGIL_AUTH: 'jwt', VIGIL_JWKS: ctx.jwt.jwksPath, VIGIL_JWT_ALGORITHMS: 'RS256' };
      const r = await single(ctx, (b) => stormRun(ctx, b, ctx.jwt), env);
      return { ...r, verifyPerSec: verify.rate, ratioToVerify: r.connectsPerSec / verify.rate };
    },
  },
  {
    id: 'cluster-connect-storm',
    title: 'Connect storm on a cluster node',
    what: 'the anonymous storm against one Vigil node with VIGIL_REDIS_URL (Redis on the generator CPU, as with Redis on its own machine; its CPU reported apart): every CONNECT claims its client id in Redis',
    brokers: ['vigil'],
    needs: 'cluster',
    metric: { key: 'connectsPerSec', unit: 'conn/s', higherIsBetter: true },
    run: (ctx) => clusterOne(ctx, ({ a, redis }) => (ctx.gen?.kind === 'c' ? cStormRun(ctx, a, { genSide: [redis] }) : stormRun(ctx, a, null)), {}, ctx.genCpus),
  },
  {
    id: 'idle-memory',
    title: 'Idle connection memory',
    what: '10,000 idle MQTT connections (keep alive 600 s); broker RSS growth from /proc/<pid>/status divided by connections',
    metric: { key: 'bytesPerConn', unit: 'B/conn', higherIsBetter: false },
    run: (ctx) => single(ctx, (b) => idleRun(ctx, b)),
  },
  {
    id: 'retained-storm',
    title: 'Retained-subscribe storm',
    what: '10,000 retained topics stored, then a new client subscribes to # and receives them all (QoS 0); time until the last arrives',
    metric: { key: 'allReceivedMs', unit: 'ms', higherIsBetter: false },
    run: (ctx) => single(ctx, (b) => retainedRun(ctx, b)),
  },
  {
    id: 'retained-snapshot',
    title: 'Retained snapshot (fleet monitor)',
    what: 'N retained topics (100,000; --quick 10,000) stored at QoS 1, then a monitor subscribes to # at QoS 1 (acknowledging); time until its last message, how many arrived, broker peak RSS',
    metric: { key: 'lastMessageMs', unit: 'ms', higherIsBetter: false },
    run: (ctx) => single(ctx, (b) => snapshotRun(ctx, b)),
  },
  {
    id: 'cluster-qos0',
    title: 'Cross-node QoS 0 pairs',
    what: '2 Vigil nodes + Redis; 8 publishers on node A → 8 subscribers on node B, QoS 0, window 64',
    brokers: ['vigil'],
    needs: 'cluster',
    metric: { key: 'msgsPerSec', unit: 'msg/s', higherIsBetter: true },
    run: (ctx) => cluster(ctx, ({ a, b, redis }) => {
      const { flows, subs } = pairsLayout(8, 0, 64, ctx.shards, 'bench/xq0');
      const cgen = { scenario: 'pairs', qos: 0, pubs: 8, subs: 8, inflight: 64, topic: 'bench/xq0' };
      return flowRun(ctx, { flows, subs, procs: [a, b, redis], pubPort: a.port, subPort: b.port, cgen });
    }),
  },
  {
    id: 'cluster-qos1',
    title: 'Cross-node QoS 1 pairs',
    what: '2 Vigil nodes + Redis; 8 publishers on node A → 8 subscribers on node B, QoS 1, 64 in flight',
    brokers: ['vigil'],
    needs: 'cluster',
    metric: { key: 'msgsPerSec', unit: 'msg/s', higherIsBetter: true },
    run: (ctx) => cluster(ctx, ({ a, b, redis }) => {
      const { flows, subs } = pairsLayout(8, 1, 64, ctx.shards, 'bench/xq1');
      const cgen = { scenario: 'pairs', qos: 1, pubs: 8, subs: 8, inflight: 64, topic: 'bench/xq1' };
      return flowRun(ctx, { flows, subs, procs: [a, b, redis], pubPort: a.port, subPort: b.port, cgen });
    }),
  },
  {
    id: 'cluster-qos2',
    title: 'Cross-node QoS 2 pairs (persistent publishers)',
    what: '2 Vigil nodes + Redis; 8 persistent-session publishers on node A → 8 subscribers on node B, QoS 2 (PUBREC → PUBREL → PUBCOMP), 64 in flight; each publish is stored in Redis before it is routed. Compare with cluster-qos1',
    brokers: ['vigil'],
    needs: 'cluster',
    metric: { key: 'msgsPerSec', unit: 'msg/s', higherIsBetter: true },
    run: (ctx) => cluster(ctx, crossNodePairs(ctx, 2, 'bench/xq2', { persistentPublishers: true })),
  },
  {
    id: 'cluster-qos1-replica',
    title: 'Cross-node QoS 1 pairs, Redis with a replica, no WAIT',
    what: 'cluster-qos1 with a replicated Redis (one replica in sync), acknowledged as soon as the master has it; the baseline of cluster-qos1-wait (ackP50Us/ackP99Us: PUBLISH → PUBACK)',
    brokers: ['vigil'],
    needs: 'cluster',
    metric: { key: 'msgsPerSec', unit: 'msg/s', higherIsBetter: true },
    run: (ctx) => cluster(ctx, crossNodePairs(ctx, 1, 'bench/xq1r'), { replica: true }),
  },
  {
    id: 'cluster-qos1-wait',
    title: 'Cross-node QoS 1 pairs, VIGIL_REDIS_WAIT_REPLICAS=1',
    what: 'cluster-qos1-replica with every PUBACK after Redis WAIT confirmed the replica has the writes (one WAIT per event-loop turn)',
    brokers: ['vigil'],
    needs: 'cluster',
    metric: { key: 'msgsPerSec', unit: 'msg/s', higherIsBetter: true },
    run: (ctx) => cluster(ctx, crossNodePairs(ctx, 1, 'bench/xq1w'), { replica: true, env: { VIGIL_REDIS_WAIT_REPLICAS: '1', VIGIL_REDIS_WAIT_TIMEOUT_MS: '500' } }),
  },
  {
    id: 'will-failover',
    title: 'Will failover',
    what: `clients with wills on node A, subscriber on node B; SIGKILL node A; time until B's subscriber has each will (node timeout ${NODE_TIMEOUT_MS} ms)`,
    brokers: ['vigil'],
    needs: 'cluster',
    metric: { key: 'p99Us', unit: 'ms', higherIsBetter: false, scale: 1e-3 },
    run: (ctx) => cluster(ctx, ({ a, b }) => willRun(ctx, a, b, ctx.prof.willClients)),
  },
  {
    id: 'will-failover-fleet',
    title: 'Will failover at fleet size',
    what: `N clients with wills (10,000; --quick 1,000) on node A, a monitor on node B that has first carried 2N QoS 1 publishes to it (a survivor that has served traffic); SIGKILL node A; time until the monitor has each will, p50/p99 (node timeout ${NODE_TIMEOUT_MS} ms; goal p99 ≤ timeout + 1 s)`,
    brokers: ['vigil'],
    needs: 'cluster',
    metric: { key: 'p99Us', unit: 'ms', higherIsBetter: false, scale: 1e-3 },
    // info logs: the reaper's timeline (reapTimeline), at most 100 will lines a second.
    // the monitor takes every will in one burst: its queue holds the burst (README "Wills").
    // Redis on the generator's CPU, as in fleet-reconnect: the survivor's core is the node's
    // alone (in production Redis has its own machine); the generator uses ~15 % of its core
    run: (ctx) => cluster(ctx, ({ a, b, redis }) => willRun(ctx, a, b, ctx.prof.fleetWills, redis, 2 * ctx.prof.fleetWills), { env: { VIGIL_MAX_QUEUED: String(2 * ctx.prof.fleetWills), VIGIL_LOG_LEVEL: 'info' }, redisCpus: ctx.genCpus }),
  },
  {
    id: 'fleet-reconnect',
    title: 'Fleet reconnect to a cluster node',
    what: 'N clients (distinct RS256 JWTs, retained QoS 1 wills, persistent sessions stored by node A) connect at once to node B of a 2-node cluster (Redis on the generator CPU); CONNECT → CONNACK p50/p99 and node B RSS (C generator)',
    brokers: ['vigil'],
    needs: 'cluster',
    metric: { key: 'p99Us', unit: 'ms', higherIsBetter: false, scale: 1e-3 },
    run: (ctx) => {
      if (ctx.gen?.kind !== 'c') throw new Error('needs the C generator (loadgen --hold)');
      return fleetRun(ctx);
    },
  },
  {
    id: 'qos0-sweep',
    mosquittoNagle: true,
    title: 'QoS 0 pairs at saturation (window sweep)',
    what: '8 → 8 pairs, QoS 0, one broker process driven at each window per publisher in turn; best and curve, generator CPU per window',
    metric: { key: 'msgsPerSec', unit: 'msg/s', higherIsBetter: true },
    run: (ctx) => sweepRun(ctx, 0),
  },
  {
    id: 'qos1-sweep',
    mosquittoNagle: true,
    title: 'QoS 1 pairs at saturation (window sweep)',
    what: '8 → 8 pairs, QoS 1 end to end, in-flight window per publisher swept; best and curve, generator CPU per window',
    metric: { key: 'msgsPerSec', unit: 'msg/s', higherIsBetter: true },
    run: (ctx) => sweepRun(ctx, 1),
  },
];

/** Will failover: `clients` holders with wills on node a, one subscriber on node b, SIGKILL a. */
/**
 * Wills of `clients` holders on node A, timed at a monitor on node B from A's SIGKILL. With
 * `warmup` > 0 node B first carries that many QoS 1 publishes to the monitor (worker.mjs
 * warmSurvivor): a survivor in production has served traffic before a peer dies, so its
 * publish and delivery code is compiled; a node started for the run would pay V8's cold
 * start inside the measured burst (about twice the warm CPU per will).
 */
async function willRun(ctx, a, b, clients, redis, warmup = 0) {
  let killedAtMs = 0;
  let survivorCpu = { user: NaN, system: NaN };
  let redisCpuS = NaN;
  const { results } = await runLoad({
    kind: 'will',
    shards: 1,
    params: () => ({ portA: a.port, portB: b.port, clients, warmup, timeoutMs: NODE_TIMEOUT_MS + 15000 }),
    setupTimeoutMs: 30000 + clients * 10 + (warmup > 0 ? 60000 : 0),
    runTimeoutMs: NODE_TIMEOUT_MS + 25000,
    beforeGo: async () => {
      survivorCpu = b.cpuSplit();
      redisCpuS = redis ? redis.cpuSeconds() : NaN;
      killedAtMs = Date.now();
      const killedAtUs = nowUs();
      a.kill9();
      return { killedAtUs };
    },
  });
  // the survivor's CPU from the kill to the last will (+0.5 s): what the failover cost it,
  // which a busy machine does not inflate as it does the wall-clock latencies
  const survivorEnd = b.cpuSplit();
  const survivorUserS = survivorEnd.user - survivorCpu.user;
  const survivorSystemS = survivorEnd.system - survivorCpu.system;
  // Redis's too (it runs on the generator CPU): whether it, not the survivor, is the long pole
  redisCpuS = redis ? redis.cpuSeconds() - redisCpuS : NaN;
  const r = results[0];
  if (r.received < r.expected) throw new Error(`only ${r.received}/${r.expected} wills arrived within ${NODE_TIMEOUT_MS + 15000} ms`);
  if (r.duplicates > 0) throw new Error(`${r.duplicates} wills arrived twice`);
  // quantiles of the raw samples (the merged histogram's are bucket middles, ~2 % off)
  const { p50Us, p99Us, firstUs, lastUs } = r.exact;
  const survivorCpuUsPerWill = Math.round(((survivorUserS + survivorSystemS) * 1e6) / r.received);
  // the split: user is Node's own (JS, GC, libuv), system the kernel's work for it (loopback TCP to the monitor and Redis)
  const survivorUserUsPerWill = Math.round((survivorUserS * 1e6) / r.received);
  const survivorSystemUsPerWill = Math.round((survivorSystemS * 1e6) / r.received);
  const redisCpuUsPerWill = Math.round((redisCpuS * 1e6) / r.received);
  return { value: p99Us, p50Us, p99Us, firstUs, lastUs, wills: r.received, nodeTimeoutMs: NODE_TIMEOUT_MS, warmupPublishes: warmup, survivorCpuUsPerWill, survivorUserUsPerWill, survivorSystemUsPerWill, redisCpuUsPerWill, ...reapTimeline(b, killedAtMs), ...genCpu(results) };
}

/**
 * When the survivor began and ended the reaping, ms after the kill (its log's 'reaping dead
 * node', first 'will published' and 'dead node reaped' lines, wall clock), with the phases the reaper timed: whether
 * detection, the wills, or the rest of the reap is the long pole.
 */
function reapTimeline(b, killedAtMs) {
  const out = {};
  try {
    for (const line of readFileSync(b.logFile, 'utf8').split('\n')) {
      if (!line.includes('dead node') && !line.includes('overdue node') && !(out.firstFiredMs === undefined && line.includes('will published'))) continue;
      const rec = JSON.parse(line);
      if (rec.time < killedAtMs) continue;
      if (rec.msg === 'reaping dead node') {
        out.reapStartMs = rec.time - killedAtMs;
        // the killed node's lease expiry after the kill (Redis and the node share the clock
        // here): where in the renewal interval the kill landed, and the detection lag after it
        if (rec.leaseExpiredAtMs !== undefined) {
          out.leaseExpiryMs = rec.leaseExpiredAtMs - killedAtMs;
          out.detectLagMs = rec.time - rec.leaseExpiredAtMs;
        }
      }
      else if (rec.msg === 'reading the wills of an overdue node ahead') out.readAheadStartMs = rec.time - killedAtMs;
      else if (rec.msg === 'wills of an overdue node read ahead') {
        out.readAheadEndMs = rec.time - killedAtMs;
        out.readAheadWills = rec.wills;
      }
      else if (rec.msg === 'will published') out.firstFiredMs = rec.time - killedAtMs;
      else if (rec.msg === 'dead node reaped') {
        out.reapEndMs = rec.time - killedAtMs;
        if (rec.phasesMs) out.reapPhasesMs = rec.phasesMs;
        if (rec.prefetched !== undefined) out.prefetchedWills = rec.prefetched;
      }
    }
  } catch {
    // no timeline: the numbers above stand without it
  }
  return out;
}

/**
 * Retained snapshot: the retained storm at fleet size, subscribed at QoS 1 (a monitor), with
 * the broker's RSS sampled every 100 ms. Brokers that cut the snapshot at their queue limit
 * report what arrived (received < topics), not an error.
 */
async function snapshotRun(ctx, b) {
  const { prof } = ctx;
  const sampler = cpuSampler([b], 0, 0, ctx);
  let peakKb = 0;
  let rssTimer = null;
  const { results, ready } = await runLoad({
    kind: 'retained',
    shards: 1,
    params: () => ({ port: b.port, topics: prof.snapshotTopics, rounds: 1, qos: 1, roundTimeoutMs: 120000, quietMs: 3000, storeTimeoutMs: 300000 }),
    setupTimeoutMs: 330000,
    runTimeoutMs: 130000,
    onGo: () => {
      sampler.begin();
      peakKb = b.rssKb();
      rssTimer = setInterval(() => { try { peakKb = Math.max(peakKb, b.rssKb()); } catch { /* exited */ } }, 100);
    },
    afterResults: async () => sampler.finish(),
  });
  clearInterval(rssTimer);
  if (b.exited) throw new Error(`${b.name} exited during the retained snapshot\n${b.logTail()}`);
  const round = results[0].rounds[0];
  const gen = genCpu(results);
  return {
    value: round.lastUs / 1000,
    lastMessageMs: round.lastUs / 1000,
    received: round.received,
    topics: prof.snapshotTopics,
    complete: round.received === prof.snapshotTopics,
    stored: ready[0].stored,
    peakRssMb: peakKb / 1024,
    ...gen,
    ...otherLoad(sampler.stats(), gen),
  };
}

async function stormRun(ctx, b, jwt) {
  if (ctx.gen?.kind === 'c') return cStormRun(ctx, b, { tokensTsv: jwt?.tsvPath, tokenCount: jwt?.count });
  const { prof, shards } = ctx;
  const per = Math.floor(100 / shards);
  const tokensPer = jwt ? Math.floor(jwt.count / shards) : 0;
  const warmupMs = prof.warmupMs;
  const sampler = cpuSampler([b], warmupMs, prof.stormMs, ctx);
  let warmTimer = null;
  const { results } = await runLoad({
    kind: 'connstorm',
    shards,
    params: (shard) => ({
      port: b.port,
      concurrency: shard === shards - 1 ? 100 - per * (shards - 1) : per,
      warmupMs,
      measureMs: prof.stormMs,
      maxRounds: 100000,
      tokensFile: jwt ? jwt.tokensPath : undefined,
      tokenRange: jwt ? [shard * tokensPer, (shard + 1) * tokensPer] : undefined,
    }),
    setupTimeoutMs: 30000,
    runTimeoutMs: warmupMs + prof.stormMs + 30000,
    onGo: () => { warmTimer = setTimeout(() => sampler.begin(), warmupMs); },
    afterResults: async () => sampler.finish(),
  });
  clearTimeout(warmTimer);
  if (b.exited) throw new Error(`${b.name} exited during the storm\n${b.logTail()}`);
  const accepted = results.reduce((a, r) => a + r.accepted, 0);
  const spanUs = Math.max(...results.map((r) => r.spanUs));
  const refused = results.reduce((a, r) => a + r.refused, 0);
  const errors = results.reduce((a, r) => a + r.errors, 0);
  if (accepted === 0) {
    const codes = results.map((r) => JSON.stringify(r.refusedCodes)).join(' ');
    throw new Error(`no connection accepted (refused ${refused} with codes ${codes}, errors ${errors})`);
  }
  const h = mergeHist(results);
  const connectsPerSec = spanUs > 0 ? accepted / (spanUs / 1e6) : NaN;
  const gen = genCpu(results);
  return {
    value: connectsPerSec,
    connectsPerSec,
    p50Us: h.quantile(0.5),
    p99Us: h.quantile(0.99),
    accepted,
    refused,
    errors,
    ...gen,
    ...otherLoad(sampler.stats(), gen),
  };
}

/**
 * Connect storm with bench/gen/loadgen --scenario connect: 100 lanes, each CONNECT → CONNACK
 * → DISCONNECT → next, so ≤ 100 CONNECTs outstanding. A JWT storm (tokensTsv) has the same
 * warm-up and window as the anonymous one (it had none: the JIT and the auth threads' warm-up
 * fell into its window, ~250 µs per connection more in a 3 s window): every token is still used
 * once, the warm-up's too, so no verification cache can answer. Also reports the broker's CPU
 * per connection (CPU seconds over the window / connections), meaningful on a busy machine.
 */
async function cStormRun(ctx, b, { tokensTsv, tokenCount, procs = [b], genSide = [] } = {}) {
  const { prof } = ctx;
  const warmupMs = prof.warmupMs;
  const sampler = cpuSampler(procs, warmupMs, prof.stormMs, ctx);
  // processes of the bench on the generator CPUs besides the generator (Redis): reported on their own
  const side = genSide.length > 0 ? cpuSampler(genSide, warmupMs, prof.stormMs, ctx) : undefined;
  const argv = [
    '-c', ctx.genCpus, ctx.gen.bin, '--port', String(b.port), '--scenario', 'connect', '--concurrency', '100',
    '--keepalive', '60', '--warmup-ms', String(warmupMs), '--duration-ms', String(prof.stormMs),
  ];
  if (tokensTsv) argv.push('--tokens', tokensTsv);
  const r = await runLoadgen(argv, warmupMs + prof.stormMs + 30000, () => {
    sampler.onGo();
    side?.onGo();
  });
  for (const p of [...procs, ...genSide]) if (p.exited) throw new Error(`${p.name} exited during the storm\n${p.logTail()}`);
  if (r.accepted === 0) throw new Error(`no connection accepted (refused ${r.refused} with codes ${JSON.stringify(r.refusedCodes)}, ${r.errors} errors: ${r.error})`);
  const connectsPerSec = r.spanUs > 0 ? r.accepted / (r.spanUs / 1e6) : NaN;
  const genCpuPct = r.wallUs > 0 ? (100 * r.cpuUs) / r.wallUs : NaN;
  const gen = { genCpuPct, genCpuMaxWorkerPct: genCpuPct };
  const sidePct = side ? side.stats().brokerCpuPct : 0;
  const cpu = otherLoad(sampler.stats(), { genCpuPct: genCpuPct + sidePct });
  return {
    value: connectsPerSec,
    connectsPerSec,
    p50Us: r.p50Us ?? NaN,
    p99Us: r.p99Us ?? NaN,
    accepted: r.accepted,
    refused: r.refused,
    errors: r.errors,
    // broker CPU seconds per second / connections per second; user and kernel apart (what the
    // broker's own code costs, and for Node V8 and libuv, beside what the kernel does for it)
    brokerUsPerConn: (cpu.brokerCpuPct / 100) * 1e6 / connectsPerSec,
    brokerUserUsPerConn: (cpu.brokerUserPct / 100) * 1e6 / connectsPerSec,
    brokerSystemUsPerConn: (cpu.brokerSystemPct / 100) * 1e6 / connectsPerSec,
    ...(side ? { redisCpuPct: sidePct, redisUsPerConn: (sidePct / 100) * 1e6 / connectsPerSec } : {}),
    generator: 'c',
    // every token used before the window ended: the lanes stopped early, the window is short of load
    tokensRanOut: tokenCount !== undefined && r.started >= tokenCount,
    ...gen,
    ...cpu,
  };
}

/** One Vigil node in cluster mode, Redis on `redisCpus`: what a cluster node pays per CONNECT. */
async function clusterOne(ctx, fn, env = {}, redisCpus = ctx.brokerCpus) {
  const redis = await startRedis({ cpus: redisCpus, logDir: ctx.logDir });
  const procs = [redis];
  try {
    const a = await startBroker('vigil', {
      cpus: ctx.brokerCpus, logDir: ctx.logDir, label: 'vigil-cluster',
      env: { VIGIL_REDIS_URL: `redis://127.0.0.1:${redis.port}`, VIGIL_REDIS_PREFIX: `bench${Date.now()}`, VIGIL_NODE_ID: 'bench-one', ...env },
    });
    procs.push(a);
    return await fn({ a, redis });
  } finally {
    await stopAll(procs);
  }
}

/**
 * Fleet reconnect: N clients (distinct RS256 JWTs with an acl claim, retained QoS 1 wills,
 * persistent sessions) first connect to node A and leave with DISCONNECT, so their sessions
 * are stored offline; then all N connect at once to node B, which claims and resumes every
 * session. Reports CONNECT → CONNACK p50/p99, the time until the last CONNACK and node B's RSS.
 */
async function fleetRun(ctx) {
  const n = ctx.prof.fleetClients;
  const tokens = await makeJwtMaterial(ctx.work, n, { subPrefix: 'fleet', name: 'fleet-tokens', claims: (sub) => ({ acl: { publish: [`fleet/${sub}/state`] } }) });
  const jwtEnv = { VIGIL_AUTH: 'jwt', VIGIL_JWKS: tokens.jwksPath, VIGIL_JWT_ALGORITHMS: 'RS256' };
  // Redis on the generator's CPU (the C generator uses a few % of it here), as in the issue's
  // cluster measurements: the storm measures the node, not Redis taking turns on its core.
  const redis = await startRedis({ cpus: ctx.genCpus, logDir: ctx.logDir });
  const procs = [redis];
  try {
    const env = {
      ...jwtEnv,
      VIGIL_REDIS_URL: `redis://127.0.0.1:${redis.port}`,
      VIGIL_REDIS_PREFIX: `benchfleet${Date.now()}`,
      VIGIL_NODE_TIMEOUT_MS: String(NODE_TIMEOUT_MS),
      VIGIL_HEARTBEAT_MS: String(HEARTBEAT_MS),
    };
    const nofile = n + 4096;
    const a = await startBroker('vigil', { cpus: ctx.brokerCpus, logDir: ctx.logDir, label: 'vigil-a', nofile, env: { ...env, VIGIL_NODE_ID: 'fleet-a' } });
    procs.push(a);
    const b = await startBroker('vigil', { cpus: ctx.brokerCpus, logDir: ctx.logDir, label: 'vigil-b', nofile, env: { ...env, VIGIL_NODE_ID: 'fleet-b' } });
    procs.push(b);
    const common = ['--scenario', 'connect', '--tokens', tokens.tsvPath, '--clean', '0', '--will', '--id-prefix', 'fleet', '--keepalive', '600', '--total', String(n), '--warmup-ms', '0'];
    // phase 1: the fleet's sessions, stored by node A (200 at a time)
    const primed = await runLoadgen(['-c', ctx.genCpus, ctx.gen.bin, '--port', String(a.port), ...common, '--concurrency', '200', '--duration-ms', '120000'], 150000, () => undefined);
    if (primed.accepted < n) throw new Error(`priming: node A accepted ${primed.accepted}/${n} (refused ${primed.refused} ${JSON.stringify(primed.refusedCodes)}; ${primed.error})`);
    await sleep(1000);
    const baseKb = b.rssKb();
    let connectedKb = NaN;
    let connected = null;
    const sampler = cpuSampler([a, b, redis], 0, 0, ctx);
    sampler.begin();
    const overflowsBefore = listenOverflows();
    // phase 2: every client at once to node B, held while B's memory is read
    const r = await runLoadgen(['-c', ctx.genCpus, ctx.gen.bin, '--port', String(b.port), ...common, '--hold', '--hold-ms', '3000', '--duration-ms', '60000'], 120000, () => undefined, (msg) => {
      if (msg.event !== 'connected') return;
      connected = msg;
      sampler.finish();
      connectedKb = b.rssKb();
    });
    const overflows = listenOverflows() - overflowsBefore;
    for (const p of procs) if (p.exited) throw new Error(`${p.name} exited during the fleet reconnect\n${p.logTail()}`);
    const c = connected ?? r;
    // fewer than n is reported (the goal is then not met), not thrown: the numbers still tell how far it got
    if (c.accepted === 0) throw new Error(`no client of the fleet got a CONNACK (refused ${c.refused} ${JSON.stringify(c.refusedCodes)}; ${c.error})`);
    const genCpuPct = c.wallUs > 0 ? (100 * c.cpuUs) / c.wallUs : NaN;
    const gen = { genCpuPct, genCpuMaxWorkerPct: genCpuPct };
    return {
      value: c.p99Us,
      p50Us: c.p50Us,
      p99Us: c.p99Us,
      clients: n,
      connected: c.accepted,
      allConnectedMs: c.spanUs / 1000,
      baseRssMb: baseKb / 1024,
      rssMb: connectedKb / 1024,
      refused: c.refused,
      errors: c.errors,
      late: r.errors - c.errors,
      listenOverflows: overflows,
      somaxconn: readSysctl('net/core/somaxconn'),
      ...gen,
      ...otherLoad(sampler.stats(), gen),
    };
  } finally {
    await stopAll(procs);
  }
}

/**
 * The kernel's count of connections it dropped because a listener's accept queue was full
 * (TcpExt ListenOverflows, all listeners of the machine): a fleet arriving faster than the
 * queue (the listen backlog, capped by net.core.somaxconn) drains retries its SYN 1 s later,
 * then 3 s, which is the tail of the connect latency, not the broker. NaN where unreadable.
 */
function listenOverflows() {
  try {
    const lines = readFileSync('/proc/net/netstat', 'utf8').split('\n').filter((l) => l.startsWith('TcpExt:'));
    const names = lines[0].split(/\s+/);
    const values = lines[1].split(/\s+/);
    return Number(values[names.indexOf('ListenOverflows')]);
  } catch {
    return NaN;
  }
}

function readSysctl(name) {
  try {
    return Number(readFileSync(`/proc/sys/${name}`, 'utf8').trim());
  } catch {
    return NaN;
  }
}

/**
 * Pairs at saturation: the same broker process driven at each window per publisher in turn;
 * the headline is the broker's best, the curve is every window with the generator's CPU, so
 * a broker held back by the window (or the generator) shows as such.
 */
async function sweepRun(ctx, qos) {
  const prof = { ...ctx.prof, warmupMs: ctx.prof.sweepWarmupMs, measureMs: ctx.prof.sweepMeasureMs };
  return single(ctx, async (b) => {
    const curve = [];
    for (const window of ctx.prof.sweepWindows) {
      const topic = `bench/sw${qos}w${window}`;
      const { flows, subs } = pairsLayout(8, qos, window, ctx.shards, topic);
      const cgen = { scenario: 'pairs', qos, pubs: 8, subs: 8, inflight: window, topic };
      const r = await flowRun({ ...ctx, prof }, { flows, subs, procs: [b], pubPort: b.port, subPort: b.port, cgen });
      curve.push({ window, msgsPerSec: r.msgsPerSec, p50Us: r.p50Us, p99Us: r.p99Us, genCpuPct: r.genCpuPct, brokerCpuPct: r.brokerCpuPct, otherLoadPct: r.otherLoadPct });
    }
    const best = curve.reduce((x, y) => (y.msgsPerSec > x.msgsPerSec ? y : x));
    return {
      value: best.msgsPerSec,
      msgsPerSec: best.msgsPerSec,
      bestWindow: best.window,
      p50Us: best.p50Us,
      p99Us: best.p99Us,
      genCpuPct: best.genCpuPct,
      genCpuMaxPct: Math.max(...curve.map((c) => c.genCpuPct)),
      brokerCpuPct: best.brokerCpuPct,
      otherLoadPct: Math.max(...curve.map((c) => c.otherLoadPct ?? 0)),
      curve,
    };
  });
}

async function idleRun(ctx, b) {
  const { prof, shards } = ctx;
  const total = prof.idleConnections;
  const per = Math.ceil(total / shards);
  await sleep(500);
  const baseKb = b.rssKb();
  let afterKb = NaN;
  const sampler = cpuSampler([b], 0, 0, ctx);
  const { results } = await runLoad({
    kind: 'idle',
    shards,
    params: (shard) => ({
      port: b.port,
      count: Math.min(per, total - shard * per),
      concurrency: 100,
      firstIndex: shard * per,
      holdMs: 60000,
    }),
    setupTimeoutMs: 30000,
    runTimeoutMs: 90000,
    onGo: () => sampler.begin(),
    afterResults: async () => {
      sampler.finish();
      await sleep(2000);
      afterKb = b.rssKb();
    },
  });
  if (b.exited) throw new Error(`${b.name} exited while holding idle connections\n${b.logTail()}`);
  const connected = results.reduce((a, r) => a + r.connected, 0);
  const failed = results.reduce((a, r) => a + r.failed, 0);
  if (connected < total * 0.99) throw new Error(`only ${connected}/${total} idle connections accepted (${failed} failed)`);
  const connectMs = Math.max(...results.map((r) => r.connectUs)) / 1000;
  const bytesPerConn = ((afterKb - baseKb) * 1024) / connected;
  const gen = genCpu(results);
  return { value: bytesPerConn, bytesPerConn, connected, baseRssMb: baseKb / 1024, rssMb: afterKb / 1024, connectMs, ...gen, ...otherLoad(sampler.stats(), gen) };
}

async function retainedRun(ctx, b) {
  const { prof, shards } = ctx;
  const sampler = cpuSampler([b], 0, 0, ctx);
  const { results, ready } = await runLoad({
    kind: 'retained',
    shards: Math.min(shards, 1),
    params: () => ({ port: b.port, topics: prof.retainedTopics, rounds: prof.retainedRounds, roundTimeoutMs: 30000 }),
    setupTimeoutMs: 90000,
    runTimeoutMs: prof.retainedRounds * 32000 + 10000,
    onGo: () => sampler.begin(),
    afterResults: async () => sampler.finish(),
  });
  if (b.exited) throw new Error(`${b.name} exited during the retained storm\n${b.logTail()}`);
  const rounds = results[0].rounds;
  const incomplete = rounds.filter((r) => !r.complete);
  if (incomplete.length) {
    throw new Error(`subscriber got ${incomplete.map((r) => r.received).join(', ')} of ${prof.retainedTopics} retained messages within 30 s (stored ${ready[0].stored})`);
  }
  const times = rounds.map((r) => r.us / 1000).sort((x, y) => x - y);
  const allReceivedMs = times[Math.floor(times.length / 2)];
  const h = mergeHist(results);
  const gen = genCpu(results);
  return {
    value: allReceivedMs,
    allReceivedMs,
    msgsPerSec: prof.retainedTopics / (allReceivedMs / 1000),
    p50Us: h.quantile(0.5),
    p99Us: h.quantile(0.99),
    ...gen,
    ...otherLoad(sampler.stats(), gen),
  };
}
