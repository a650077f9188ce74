// Starting, probing and stopping the brokers under test. Every broker process is started
// through `taskset -c <broker CPUs>` (taskset execs, so the pid is the broker's own) and is
// a fresh process per run.
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync, closeSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const AEDES_SERVER = fileURLToPath(new URL('../brokers/aedes-server.mjs', import.meta.url));
const FLOOR_SERVER = fileURLToPath(new URL('../brokers/bare-node-floor.mjs', import.meta.url));
export const VIGIL_CLI = path.join(ROOT, 'dist/src/cli.js');

// `mosquitto-nagle` is Mosquitto with its own default, `set_tcp_nodelay false`: for the flow
// scenarios (`mosquittoNagle: true`) both are run and a goal takes the better of the two, so
// Mosquitto is compared at its best, not held back by one setting (issue 13)
export const BROKER_NAMES = ['vigil', 'aedes', 'mosquitto', 'mosquitto-nagle'];
export const LABEL = { vigil: 'Vigil', aedes: 'Aedes', mosquitto: 'Mosquitto', 'mosquitto-nagle': 'Mosquitto (Nagle on)' };
export const isMosquitto = (name) => name === 'mosquitto' || name === 'mosquitto-nagle';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Every process started here and not yet exited, so an interrupted bench leaves none behind. */
export const LIVE = new Set();

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A process's CPU seconds so far, all threads, as /proc/<pid>/stat counts them: user and
 * system (utime, stime in USER_HZ, 100 per second). Throws when the process is gone.
 */
export function processCpu(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: Number(fields[11]) / 100, system: Number(fields[12]) / 100 };
}

export function waitForPort(port, timeoutMs, isDead) {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      if (isDead && isDead()) return reject(new Error(`process exited before listening on ${port}`));
      const s = net.connect({ port, host: '127.0.0.1' });
      s.once('connect', () => {
        s.destroy();
        resolve();
      });
      s.once('error', () => {
        s.destroy();
        if (Date.now() > deadline) reject(new Error(`nothing listening on 127.0.0.1:${port} after ${timeoutMs} ms`));
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

/** A running process under test: pid, port, memory and CPU readers, stop(). */
class Proc {
  constructor(name, child, port, logFile) {
    this.name = name;
    this.child = child;
    this.pid = child.pid;
    this.port = port;
    this.logFile = logFile;
    this.exited = false;
    this.exitInfo = null;
    LIVE.add(this);
    this.exitPromise = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        LIVE.delete(this);
        this.exited = true;
        this.exitInfo = { code, signal };
        resolve();
      });
    });
  }

  /** Resident set size in kB, from /proc/<pid>/status. */
  rssKb() {
    const status = readFileSync(`/proc/${this.pid}/status`, 'utf8');
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(status);
    return m ? Number(m[1]) : NaN;
  }

  /** user + system CPU seconds so far, all threads, from /proc/<pid>/stat. */
  cpuSeconds() {
    const { user, system } = this.cpuSplit();
    return user + system;
  }

  /**
   * CPU seconds so far, all threads, split as /proc/<pid>/stat counts them: user (the broker's
   * own code, and for Node V8, GC and libuv too) and system (the kernel working for it: here
   * mostly loopback TCP).
   */
  cpuSplit() {
    try {
      return processCpu(this.pid);
    } catch {
      return { user: NaN, system: NaN };
    }
  }

  logTail(lines = 15) {
    try {
      return readFileSync(this.logFile, 'utf8').trim().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  kill9() {
    if (!this.exited) this.child.kill('SIGKILL');
  }

  async stop() {
    if (this.exited) return;
    this.child.kill('SIGTERM');
    await Promise.race([this.exitPromise, sleep(3000)]);
    if (!this.exited) {
      this.child.kill('SIGKILL');
      await Promise.race([this.exitPromise, sleep(2000)]);
    }
  }
}

/** The soft open-files limit of this process (what a child inherits). */
function openFilesLimit() {
  try {
    return Number(execFileSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).trim()) || 1024;
  } catch {
    return 1024;
  }
}

function launch(name, cpus, command, args, { env, logDir, port, nofile }) {
  mkdirSync(logDir, { recursive: true });
  const logFile = path.join(logDir, `${name}-${port}.log`);
  const fd = openSync(logFile, 'w');
  // prlimit and taskset both exec: the pid stays the broker's own
  const argv = ['-c', cpus, command, ...args];
  const raise = nofile && openFilesLimit() < nofile;
  const child = spawn(raise ? 'prlimit' : 'taskset', raise ? [`--nofile=${nofile}:${nofile}`, 'taskset', ...argv] : argv, {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  return new Proc(name, child, port, logFile);
}

/**
 * Starts one broker and waits until it accepts TCP connections.
 * @param {'vigil'|'aedes'|'mosquitto'|'bare-node-floor'} name
 * @param {{ cpus: string, logDir: string, env?: object, port?: number }} o
 */
export async function startBroker(name, o) {
  const port = o.port ?? await freePort();
  let proc;
  if (name === 'vigil') {
    const metricsPort = await freePort();
    const env = {
      VIGIL_MQTT_PORT: String(port),
      VIGIL_METRICS_PORT: String(metricsPort),
      VIGIL_BIND: '127.0.0.1',
      VIGIL_METRICS_BIND: '127.0.0.1',
      VIGIL_LOG_LEVEL: 'warn',
      VIGIL_SYS_INTERVAL_S: '0',
      VIGIL_MAX_CONNECTIONS: '100000',
      ...o.env,
    };
    const nodeArgs = (process.env.BENCH_VIGIL_NODE_ARGS ?? '').split(' ').filter(Boolean);
    proc = launch(o.label ?? 'vigil', o.cpus, process.execPath, [...nodeArgs, VIGIL_CLI], { env, logDir: o.logDir, port, nofile: o.nofile });
    proc.metricsPort = metricsPort;
  } else if (name === 'aedes') {
    proc = launch('aedes', o.cpus, process.execPath, [AEDES_SERVER, String(port), '127.0.0.1'], { env: {}, logDir: o.logDir, port });
  } else if (name === 'bare-node-floor') {
    // not a broker: the connect storm's floor (bench/brokers/bare-node-floor.mjs)
    proc = launch('bare-node-floor', o.cpus, process.execPath, [FLOOR_SERVER, String(port), '127.0.0.1'], { env: {}, logDir: o.logDir, port });
  } else if (isMosquitto(name)) {
    const conf = path.join(o.logDir, `${name}-${port}.conf`);
    mkdirSync(o.logDir, { recursive: true });
    writeFileSync(conf, [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      'max_connections -1',
      'persistence false',
      // Nagle + the generator's delayed ACKs can stall closed-loop publishers for 40 ms; with
      // it on, Mosquitto coalesces its one-write-per-message output: both are measured
      `set_tcp_nodelay ${name === 'mosquitto' ? 'true' : 'false'}`,
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      '',
    ].join('\n'));
    proc = launch(name, o.cpus, 'mosquitto', ['-c', conf], { env: {}, logDir: o.logDir, port });
  } else {
    throw new Error(`unknown broker ${name}`);
  }
  try {
    await waitForPort(port, o.readyTimeoutMs ?? 20000, () => proc.exited);
  } catch (err) {
    await proc.stop();
    throw new Error(`${name} did not start: ${err.message}\n${proc.logTail()}`);
  }
  return proc;
}

/** A redis-server on a free port; `replicaOf` (a port) starts it as a replica of that server. */
export async function startRedis(o) {
  const port = await freePort();
  const proc = launch(o.replicaOf ? 'redis-replica' : 'redis', o.cpus, 'redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no',
    ...(o.replicaOf ? ['--replicaof', '127.0.0.1', String(o.replicaOf)] : []),
  ], { env: {}, logDir: o.logDir, port });
  try {
    await waitForPort(port, 10000, () => proc.exited);
  } catch (err) {
    await proc.stop();
    throw new Error(`redis-server did not start: ${err.message}\n${proc.logTail()}`);
  }
  return proc;
}

export function mosquittoVersion() {
  try {
    const out = execFileSync('mosquitto', ['-h'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return /version\s+(\S+)/.exec(out)?.[1] ?? 'unknown';
  } catch (err) {
    const text = String(err.stdout ?? '') + String(err.stderr ?? '');
    return /version\s+(\S+)/.exec(text)?.[1] ?? 'unknown';
  }
}

export function aedesVersion() {
  try {
    return JSON.parse(readFileSync(path.join(ROOT, 'node_modules/aedes/package.json'), 'utf8')).version;
  } catch {
    return 'not installed';
  }
}

export function vigilVersion() {
  try {
    return JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version;
  } catch {
    return 'unknown';
  }
}

export const vigilBuilt = () => existsSync(VIGIL_CLI);

/**
 * A connect storm of `total` anonymous connections at `rate` per second (loadgen --scenario
 * connect, 100 lanes) against 127.0.0.1:port, the generator pinned to `cpus`; the number of
 * CONNACKs it got. Bounded: the storm's own 60 s window, 90 s for the process.
 */
export function connectStorm(loadgen, cpus, port, total, rate) {
  const args = ['-c', cpus, loadgen, '--port', String(port), '--scenario', 'connect', '--concurrency', '100', '--total', String(total), '--rate', String(rate), '--warmup-ms', '0', '--duration-ms', '60000'];
  const r = spawnSync('taskset', args, { encoding: 'utf8', timeout: 90000 });
  const line = (r.stdout ?? '').trim().split('\n').pop();
  const result = line ? JSON.parse(line) : {};
  if (!result.acceptedTotal) throw new Error(`storm to ${port} failed: ${line || r.stderr || r.error}`);
  return result.acceptedTotal;
}

/** bench/gen/loadgen.c built with gcc into a fresh temp directory (the A/B scripts' generator). */
export function buildLoadgen(prefix) {
  const bin = path.join(mkdtempSync(path.join(os.tmpdir(), prefix)), 'loadgen');
  const src = path.join(ROOT, 'bench', 'gen', 'loadgen.c');
  const r = spawnSync('gcc', ['-O2', '-Wall', '-Wextra', '-o', bin, src], { encoding: 'utf8', timeout: 60000 });
  if (r.status !== 0) throw new Error(`gcc failed: ${r.stderr || r.error}`);
  return bin;
}

/**
 * A process pinned with `taskset -c cpus` (the A/B scripts' own launcher: cwd is the checkout
 * under test), stdout ignored or piped: {child, dead()}. Stop it with stopPinned.
 */
export function launchPinned(cpus, command, args, env, cwd, stdout = 'ignore') {
  const child = spawn('taskset', ['-c', cpus, command, ...args], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', stdout, 'ignore'] });
  let dead = false;
  child.on('exit', () => (dead = true));
  return { child, dead: () => dead };
}

/** Sends `signal`, then SIGKILL after graceMs (a node writing a CPU profile on its way out needs longer). */
export function stopPinned(p, signal = 'SIGTERM', graceMs = 5000) {
  if (p.dead()) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      p.child.kill('SIGKILL');
      resolve();
    }, graceMs);
    p.child.on('exit', () => {
      clearTimeout(t);
      resolve();
    });
    p.child.kill(signal);
  });
}

/** A redis-server's INFO commandstats as {command: calls} ({} when it does not answer within 3 s). */
export function redisCommandCalls(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.write('INFO commandstats\r\n'));
    let text = '';
    s.on('data', (d) => {
      text += d;
      const m = /^\$(\d+)\r\n/.exec(text);
      if (m && Buffer.byteLength(text) >= m[0].length + Number(m[1])) s.end();
    });
    s.on('close', () => resolve(Object.fromEntries([...text.matchAll(/cmdstat_([\w|]+):calls=(\d+)/g)].map((x) => [x[1], Number(x[2])]))));
    s.on('error', () => resolve({}));
    s.setTimeout(3000, () => s.destroy());
  });
}
