#!/usr/bin/env node
// Vigil benchmark: Vigil vs Aedes vs Mosquitto on this machine, same run, as ratios.
//   npm run bench                      full run (≤ 30 min on 2 cores)
//   npm run bench -- --quick           short before/after check (≤ 3 min)
//   --only qos0-pairs,fanout           run some scenarios
//   --brokers vigil,aedes,mosquitto    choose brokers
//   --runs N                           runs per broker per scenario (A B A B order)
// See bench/README.md.
import { execFileSync, execSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  BROKER_NAMES, LABEL, LIVE, ROOT, VIGIL_CLI, startBroker, startRedis, vigilBuilt, isMosquitto,
  mosquittoVersion, aedesVersion, vigilVersion,
} from './lib/brokers.mjs';
import { SCENARIOS, profile } from './lib/scenarios.mjs';
import { RawClient, PublishTemplate, setClockBase } from './gen/client.mjs';
import { CLOCK_BASE, nowUs } from './lib/clock.mjs';
import { makeJwtMaterial } from './lib/jwt.mjs';
import { withTimeout } from './lib/load.mjs';
import { consoleTable, goals, markdown, medians, saturationWarnings, svgChart } from './lib/report.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const started = Date.now();
const elapsed = () => (Date.now() - started) / 1000;
const log = (msg) => process.stdout.write(`[${elapsed().toFixed(0).padStart(4)}s] ${msg}\n`);

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    brokers: { type: 'string', default: BROKER_NAMES.join(',') },
    runs: { type: 'string' },
    workers: { type: 'string', default: '2' },
    'broker-cpus': { type: 'string', default: '0' },
    'gen-cpus': { type: 'string', default: '1' },
    out: { type: 'string', default: path.join(ROOT, 'bench/results') },
    'no-install': { type: 'boolean', default: false },
    gen: { type: 'string' },
    'gen-turn-us': { type: 'string', default: '0' },
    help: { type: 'boolean', default: false },
  },
});

if (args.help) {
  process.stdout.write(`usage: npm run bench -- [--quick] [--only ${SCENARIOS.map((s) => s.id).join(',')}]
                   [--brokers ${BROKER_NAMES.join(',')}] [--runs N] [--workers N]
                   [--broker-cpus 0] [--gen-cpus 1] [--out bench/results] [--no-install]
                   [--gen c|node]   (flow scenarios: compiled bench/gen/loadgen.c, default when gcc builds it)
                   [--gen-turn-us N] (C generator: at most one loop turn per N µs; 0 = eager, like Node)
`);
  process.exit(0);
}

const quick = args.quick;
const runs = Number(args.runs ?? (quick ? 1 : 3));
const workers = Math.max(1, Number(args.workers));
const brokerCpus = args['broker-cpus'];
const genCpus = args['gen-cpus'];
// New runs start only within the budget; the hard limit ends the process whatever happens.
const budgetS = quick ? 165 : 27 * 60;
const hardLimitS = budgetS + (quick ? 60 : 180);
const prof = profile(quick);
const selectedBrokers = args.brokers.split(',').map((s) => s.trim()).filter(Boolean);
for (const b of selectedBrokers) if (!BROKER_NAMES.includes(b)) fail(`unknown broker ${b} (choose from ${BROKER_NAMES.join(', ')})`);
const only = args.only ? args.only.split(',').map((s) => s.trim()) : null;
if (only) for (const id of only) if (!SCENARIOS.some((s) => s.id === id)) fail(`unknown scenario ${id} (choose from ${SCENARIOS.map((s) => s.id).join(', ')})`);
const scenarios = SCENARIOS.filter((s) => !only || only.includes(s.id));
if (!Number.isInteger(runs) || runs < 1 || runs > 20) fail('--runs must be 1..20');
if (args.gen !== undefined && !['c', 'node'].includes(args.gen)) fail('--gen must be c or node');
const genTurnUs = Number(args['gen-turn-us']);
if (!Number.isInteger(genTurnUs) || genTurnUs < 0 || genTurnUs > 100000) fail('--gen-turn-us must be 0..100000');

function fail(msg) {
  process.stderr.write(`bench: ${msg}\n`);
  process.exit(2);
}

async function cleanup() {
  await Promise.all([...LIVE].map((p) => p.stop()));
}
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    log(`${sig}: stopping brokers`);
    cleanup().finally(() => process.exit(130));
  });
}
// Whatever happens, the whole bench ends: budget plus a margin for the report.
setTimeout(() => {
  log('hard time limit reached; writing what was measured and stopping');
  try {
    if (summary) writeOutputs(summary, 'stopped at the hard time limit: later runs missing');
  } catch (err) {
    process.stderr.write(`could not write the report: ${err.message}\n`);
  }
  cleanup().finally(() => process.exit(3));
}, hardLimitS * 1000).unref();

/** Set once setup is done, so the hard-limit handler can still write a report. */
let summary = null;

setClockBase(CLOCK_BASE);

// ---------------------------------------------------------------------------------------
// Setup

function sh(cmd, timeoutMs = 300000) {
  return execSync(cmd, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', timeout: timeoutMs });
}
const have = (bin) => {
  try {
    sh(`command -v ${bin}`);
    return true;
  } catch {
    return false;
  }
};

let aptUpdated = false;
function aptInstall(pkg) {
  if (args['no-install']) throw new Error(`${pkg} is not installed (--no-install)`);
  if (!aptUpdated) {
    log('apt-get update');
    sh('DEBIAN_FRONTEND=noninteractive apt-get update', 300000);
    aptUpdated = true;
  }
  log(`apt-get install -y ${pkg}`);
  sh(`DEBIAN_FRONTEND=noninteractive apt-get install -y ${pkg}`, 300000);
}

function pinSelf() {
  const ncpu = os.cpus().length;
  if (ncpu < 2) {
    log('warning: fewer than 2 CPUs; broker and generator share a core, numbers are not comparable to 2-core runs');
    return;
  }
  // -a: every thread; children forked afterwards (the generator workers) inherit it.
  execFileSync('taskset', ['-a', '-pc', genCpus, String(process.pid)], { stdio: 'ignore' });
}

/**
 * The load generator for the flow scenarios: bench/gen/loadgen.c compiled with gcc into the
 * bench's temp directory (never into the repository), or the Node workers. --gen c fails
 * when it cannot be built; without --gen a failed build falls back to Node, said in the report.
 */
const LOADGEN_SRC = path.join(ROOT, 'bench/gen/loadgen.c');
function setupGenerator(work) {
  if (args.gen === 'node') return { kind: 'node', note: 'Node generator chosen with --gen node' };
  const bin = path.join(work, 'loadgen');
  try {
    if (!have('gcc')) throw new Error('gcc not found on the PATH');
    execFileSync('gcc', ['-O2', '-Wall', '-Wextra', '-o', bin, LOADGEN_SRC], { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', timeout: 60000 });
    return { kind: 'c', bin, turnUs: genTurnUs, note: `C generator built with gcc -O2 from ${path.relative(ROOT, LOADGEN_SRC)}${genTurnUs ? `, --turn-us ${genTurnUs}` : ''}` };
  } catch (err) {
    const why = String(err.stderr || err.message).trim().split('\n').slice(-3).join(' / ');
    if (args.gen === 'c') fail(`--gen c: could not build ${path.relative(ROOT, LOADGEN_SRC)}: ${why}`);
    return { kind: 'node', note: `C generator NOT available (${why}); fell back to the Node generator for every scenario` };
  }
}

function generatorLabel() {
  if (gen.kind === 'c') return `${genCpus}: C loadgen (1 process, epoll) for the flow scenarios; ${workers} Node processes for the others`;
  return `${genCpus} (${workers} Node worker processes)`;
}

let gen = { kind: 'node', note: '' };

function machineInfo() {
  const cpuinfo = (() => { try { return execSync('cat /proc/cpuinfo', { encoding: 'utf8' }); } catch { return ''; } })();
  const model = /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? 'unknown';
  return {
    'CPU model': model,
    'CPU cores (online)': os.cpus().length,
    'broker CPUs (taskset)': brokerCpus,
    'generator CPUs (taskset)': generatorLabel(),
    memory: `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    mosquitto: brokerStatus.mosquitto?.version ?? mosquittoVersion(),
    aedes: aedesVersion(),
    vigil: vigilVersion(),
    'open files limit': (() => { try { return sh('ulimit -n').trim(); } catch { return '?'; } })(),
  };
}

async function mqttProbe(port) {
  const c = new RawClient({ port, clientId: 'bench-probe' });
  const rc = await c.connect(5000);
  c.disconnect();
  if (rc !== 0) throw new Error(`CONNACK return code ${rc}`);
}

const brokerStatus = {};
async function checkBrokers(logDir) {
  for (const b of selectedBrokers) {
    const st = { available: false, reason: '', version: '' };
    brokerStatus[b] = st;
    try {
      if (isMosquitto(b)) {
        if (!have('mosquitto')) aptInstall('mosquitto');
        st.version = mosquittoVersion();
      } else if (b === 'aedes') {
        st.version = aedesVersion();
        if (st.version === 'not installed') throw new Error('node_modules/aedes missing: run npm install');
      } else if (b === 'vigil') {
        st.version = vigilVersion();
        if (!vigilBuilt()) {
          log('dist/src/cli.js missing: npm run build');
          try {
            sh('npm run build', 300000);
          } catch (err) {
            throw new Error(`npm run build failed: ${String(err.stdout ?? err.message).split('\n').filter(Boolean).slice(-3).join(' / ')}`);
          }
          if (!vigilBuilt()) throw new Error(`${path.relative(ROOT, VIGIL_CLI)} not found after build`);
        }
      }
      const p = await startBroker(b, { cpus: brokerCpus, logDir, readyTimeoutMs: 15000 });
      try {
        await mqttProbe(p.port);
      } finally {
        await p.stop();
      }
      st.available = true;
    } catch (err) {
      st.reason = String(err.message).split('\n')[0];
      log(`${LABEL[b]} not available: ${st.reason}`);
    }
  }
}

/** Cluster mode works if a message published on node A reaches a subscriber on node B. */
async function probeCluster(logDir) {
  if (!brokerStatus.vigil?.available) return { available: false, reason: 'Vigil not available' };
  try {
    if (!have('redis-server')) aptInstall('redis-server');
  } catch (err) {
    return { available: false, reason: `redis-server not available (${err.message.split('\n')[0]})` };
  }
  const procs = [];
  try {
    const redis = await startRedis({ cpus: brokerCpus, logDir });
    procs.push(redis);
    const env = { VIGIL_REDIS_URL: `redis://127.0.0.1:${redis.port}`, VIGIL_REDIS_PREFIX: `benchprobe${Date.now()}` };
    const a = await startBroker('vigil', { cpus: brokerCpus, logDir, label: 'vigil-probe-a', env: { ...env, VIGIL_NODE_ID: 'probe-a' } });
    procs.push(a);
    const b = await startBroker('vigil', { cpus: brokerCpus, logDir, label: 'vigil-probe-b', env: { ...env, VIGIL_NODE_ID: 'probe-b' } });
    procs.push(b);
    const sub = new RawClient({ port: b.port, clientId: 'probe-sub' });
    if ((await sub.connect(5000)) !== 0) throw new Error('node B refused the probe subscriber');
    let got = false;
    sub.onPublish = () => { got = true; };
    await sub.subscribe('bench/cluster-probe', 0);
    const pub = new RawClient({ port: a.port, clientId: 'probe-pub' });
    if ((await pub.connect(5000)) !== 0) throw new Error('node A refused the probe publisher');
    const t = new PublishTemplate('bench/cluster-probe', 0, 0);
    for (let i = 0; i < 40 && !got; i++) {
      pub.write(t.batch(1, i, nowUs(), () => 0));
      await sleep(100);
    }
    sub.destroy();
    pub.destroy();
    if (a.exited || b.exited) return { available: false, reason: 'cluster mode not available (a node exited with VIGIL_REDIS_URL set)' };
    if (!got) return { available: false, reason: 'cluster mode not available (no cross-node delivery with VIGIL_REDIS_URL set)' };
    return { available: true, reason: '' };
  } catch (err) {
    return { available: false, reason: `cluster mode not available (${String(err.message).split('\n')[0]})` };
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
  }
}

// ---------------------------------------------------------------------------------------
// Main

async function main() {
  pinSelf();
  const work = mkdtempSync(path.join(os.tmpdir(), 'vigil-bench-'));
  const logDir = path.join(work, 'logs');
  mkdirSync(logDir, { recursive: true });
  gen = setupGenerator(work);
  log(`load generator: ${gen.note}`);
  log(`Vigil bench: ${quick ? 'quick' : 'full'}, ${runs} run(s), brokers ${selectedBrokers.join(', ')}, scenarios ${scenarios.map((s) => s.id).join(', ')}`);
  log(`broker CPU ${brokerCpus}, generator CPU ${genCpus}, ${workers} generator processes, logs in ${logDir}`);

  const load1 = os.loadavg()[0];
  if (load1 > 0.5) log(`warning: load average ${load1.toFixed(2)} before starting — other processes on this machine will skew the numbers (see "other load" in the report)`);
  await checkBrokers(logDir);
  const brokers = selectedBrokers.filter((b) => brokerStatus[b].available);
  if (!brokers.length) fail('no broker available');

  let clusterState = { available: false, reason: 'not probed (no cluster scenario selected)' };
  if (scenarios.some((s) => s.needs === 'cluster') && selectedBrokers.includes('vigil')) {
    log('probing Vigil cluster mode (2 nodes + Redis)');
    clusterState = await probeCluster(logDir);
    log(clusterState.available ? 'cluster mode available' : `cluster scenarios skipped: ${clusterState.reason}`);
  }

  let jwt = null;
  if (scenarios.some((s) => s.needs === 'jwt') && brokers.includes('vigil')) {
    log(`signing ${prof.jwtTokens} distinct RS256 tokens`);
    jwt = await makeJwtMaterial(work, prof.jwtTokens);
  }

  summary = {
    meta: {
      date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
      quick, runs, workers, brokerCpus, genCpus, generator: gen.kind, generatorNote: gen.note, profile: prof, loadAverageAtStart: os.loadavg()[0],
      allBrokers: selectedBrokers, brokerStatus, cluster: clusterState,
      machine: machineInfo(),
    },
    brokers,
    scenarios: [],
  };

  for (const s of scenarios) {
    const entry = { id: s.id, title: s.title, what: s.what, metric: s.metric, skipped: null, results: {} };
    summary.scenarios.push(entry);
    const eligible = brokers.filter((b) => (!s.brokers || s.brokers.includes(b)) && (b !== 'mosquitto-nagle' || s.mosquittoNagle));
    if (!eligible.length) entry.skipped = `needs ${(s.brokers ?? []).map((b) => LABEL[b]).join('/')}, not benchmarked in this run`;
    else if (s.needs === 'cluster' && !clusterState.available) entry.skipped = clusterState.reason.startsWith('cluster mode') ? clusterState.reason : `cluster mode not available (${clusterState.reason})`;
    else if (s.needs === 'jwt' && !jwt) entry.skipped = 'no JWT material';
    if (entry.skipped) {
      log(`${s.id}: skipped: ${entry.skipped}`);
      continue;
    }
    for (const b of eligible) entry.results[b] = { all: [], runs: [], errors: [], median: {} };
    for (let r = 0; r < runs; r++) {
      for (const b of eligible) {
        const slot = entry.results[b];
        if (elapsed() > budgetS) {
          slot.all.push({ error: 'skipped: time budget exhausted' });
          slot.errors.push('skipped: time budget exhausted');
          continue;
        }
        const ctx = { broker: b, brokerCpus, genCpus, logDir, work, prof, shards: workers, jwt, gen };
        try {
          const result = await withTimeout(s.run(ctx), 240000, `${s.id} on ${b}`);
          slot.all.push(result);
          slot.runs.push(result);
          log(`${s.id} run ${r + 1}/${runs} ${LABEL[b].padEnd(9)} ${describe(s, result)}`);
        } catch (err) {
          const msg = String(err && err.message ? err.message : err);
          slot.all.push({ error: msg });
          slot.errors.push(msg);
          log(`${s.id} run ${r + 1}/${runs} ${LABEL[b].padEnd(9)} FAILED: ${msg.split('\n').slice(0, 4).join(' | ')}`);
          await cleanup();
        }
      }
    }
    for (const b of eligible) entry.results[b].median = medians(entry.results[b].runs);
  }

  writeOutputs(summary, '');
  await cleanup();
  process.exit(0);
}

function writeOutputs(summary, incomplete) {
  summary.meta.elapsedS = elapsed();
  summary.meta.incomplete = incomplete;
  for (const s of summary.scenarios) for (const r of Object.values(s.results)) r.median = medians(r.runs);
  mkdirSync(args.out, { recursive: true });
  const stamp = summary.meta.date.replace(/[:]/g, '').replace(/-/g, '').replace('T', '-').replace('Z', '');
  const mdPath = path.join(args.out, 'report.md');
  const svgPath = path.join(args.out, 'chart.svg');
  const jsonPath = path.join(args.out, `results-${stamp}${quick ? '-quick' : ''}.json`);
  writeFileSync(mdPath, markdown(summary));
  writeFileSync(svgPath, svgChart(summary));
  writeFileSync(jsonPath, JSON.stringify(summary, null, 2));

  process.stdout.write(`\n${consoleTable(summary)}\n\nGoals:\n`);
  for (const g of goals(summary)) process.stdout.write(`  ${g.status.padEnd(7)}  ${g.goal}: ${g.measured}${g.noisy ? '  (UNRELIABLE: busy machine or saturated generator)' : ''}\n`);
  for (const w of saturationWarnings(summary)) process.stdout.write(`  warning: ${w}\n`);
  if (incomplete) process.stdout.write(`  INCOMPLETE: ${incomplete}\n`);
  process.stdout.write(`\nReport: ${path.relative(process.cwd(), mdPath)}, chart: ${path.relative(process.cwd(), svgPath)}, data: ${path.relative(process.cwd(), jsonPath)} (${Math.round(elapsed())} s)\n`);
}

function describe(s, r) {
  const parts = [];
  const scale = s.metric.scale ?? 1;
  const v = r[s.metric.key] * scale;
  parts.push(`${Number.isFinite(v) ? Math.round(v).toLocaleString('en-US') : '—'} ${s.metric.unit}`);
  if (Number.isFinite(r.p50Us)) parts.push(`p50 ${(r.p50Us / 1000).toFixed(2)} ms p99 ${(r.p99Us / 1000).toFixed(2)} ms`);
  if (Number.isFinite(r.verifyPerSec)) parts.push(`raw verify ${Math.round(r.verifyPerSec).toLocaleString('en-US')}/s`);
  if (Number.isFinite(r.rssMb)) parts.push(`RSS ${r.baseRssMb.toFixed(0)} → ${r.rssMb.toFixed(0)} MB`);
  if (Number.isFinite(r.brokerCpuPct)) parts.push(`broker CPU ${r.brokerCpuPct.toFixed(0)}%`);
  if (Number.isFinite(r.genCpuPct)) parts.push(`gen CPU ${r.genCpuPct.toFixed(0)}%`);
  if (Number.isFinite(r.otherLoadPct) && r.otherLoadPct >= 10) parts.push(`OTHER LOAD ${r.otherLoadPct.toFixed(0)}% of a core`);
  return parts.join(', ');
}

main().catch(async (err) => {
  process.stderr.write(`bench failed: ${err.stack ?? err}\n`);
  await cleanup();
  process.exit(1);
});
