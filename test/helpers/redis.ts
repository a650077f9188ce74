// Real redis-server processes for cluster tests: one standalone server, a 3-master Redis
// Cluster, or a master with replicas watched by redis-sentinel processes, each on free
// loopback ports in its own temp dir, with no persistence unless asked.
// Every process started here is killed by stop() and, as a last resort, when the test
// process exits. Each test should also use its own random key prefix (randomPrefix()).
import { spawn, execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

export function randomPrefix(name = 't'): string {
  return `${name}-${randomBytes(4).toString('hex')}`;
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** A free port whose cluster bus port (port + 10000) is free too when `withBus`. */
export async function freePort(withBus = false): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = createServer();
      srv.once('error', reject);
      srv.listen(0, '127.0.0.1', () => {
        const p = (srv.address() as { port: number }).port;
        srv.close(() => resolve(p));
      });
    });
    if (!withBus) return port;
    if (port + 10000 <= 65535 && (await portFree(port + 10000))) return port;
  }
  throw new Error('no free port pair found');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function redisCli(args: string[], timeoutMs = 20000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new Error(`redis-cli ${args.join(' ')}: ${err.message} ${stderr}`));
      else resolve(stdout);
    });
  });
}

export interface TestRedis {
  readonly url: string;
  readonly port: number;
  /** A fresh client (closed by stop()). */
  client(): Redis;
  /** Graceful shutdown of the server and every client made by client(). */
  stop(): Promise<void>;
  /** SIGKILL, as a crash. */
  kill(): Promise<void>;
  /** Stops serving clients for `ms` (CLIENT PAUSE ALL). */
  pause(ms: number): Promise<void>;
  /** Starts again on the same port (after kill or stop). */
  restart(): Promise<void>;
  /** SHUTDOWN (an AOF fsync, as SIGTERM does), then start again on the same port. */
  shutdownAndRestart(): Promise<void>;
}

interface ServerOptions {
  appendonly?: boolean;
  /** appendfsync policy with appendonly (Redis's default: everysec). */
  appendfsync?: 'always' | 'everysec' | 'no';
  cluster?: boolean;
  port?: number;
  /** Starts as a replica of this port on 127.0.0.1. */
  replicaOf?: number;
  /** Log to <dir>/redis.log (read by TestSentinelGroup.describe()) rather than nowhere. */
  logfile?: boolean;
}

class RedisProcess {
  proc?: ChildProcess;
  exited?: Promise<void>;
  constructor(readonly port: number, readonly dir: string, readonly options: ServerOptions) {}

  /** Started and not exited (a SIGKILLed process has a signalCode, not an exitCode). */
  get running(): boolean {
    return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  get logPath(): string {
    return join(this.dir, 'redis.log');
  }

  /** The last `lines` lines of its log file (logfile on), or why there are none. */
  logTail(lines: number): string {
    try {
      return readFileSync(this.logPath, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch (err) {
      return `(no log: ${(err as NodeJS.ErrnoException).code})`;
    }
  }

  /** The program and arguments that start this server. */
  protected command(): [string, string[]] {
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir, '--save', '', '--appendonly', this.options.appendonly ? 'yes' : 'no', '--protected-mode', 'no', '--loglevel', this.options.logfile ? 'notice' : 'warning'];
    if (this.options.appendonly && this.options.appendfsync) args.push('--appendfsync', this.options.appendfsync);
    if (this.options.replicaOf) args.push('--replicaof', '127.0.0.1', String(this.options.replicaOf));
    if (this.options.logfile) args.push('--logfile', this.logPath);
    if (this.options.cluster) args.push('--cluster-enabled', 'yes', '--cluster-config-file', join(this.dir, 'nodes.conf'), '--cluster-node-timeout', '2000');
    return ['redis-server', args];
  }

  async start(): Promise<void> {
    const [program, args] = this.command();
    const proc = spawn(program, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc = proc;
    live.add(proc);
    let stderr = '';
    proc.stderr!.on('data', (d) => (stderr += String(d)));
    this.exited = new Promise((resolve) => proc.once('exit', () => {
      live.delete(proc);
      resolve();
    }));
    const deadline = Date.now() + 10000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`${program} exited: ${stderr}`);
      try {
        if ((await redisCli(['-p', String(this.port), 'PING'], 2000)).trim() === 'PONG') return;
      } catch {
        // not up yet
      }
      if (Date.now() > deadline) throw new Error(`${program} on ${this.port} did not answer PING`);
      await sleep(50);
    }
  }

  async kill(): Promise<void> {
    if (!this.proc || !this.running) return;
    this.proc.kill('SIGKILL');
    await this.exited;
  }

  async stop(): Promise<void> {
    if (!this.proc || !this.running) return;
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc?.kill('SIGKILL'), 3000);
    await this.exited;
    clearTimeout(t);
  }
}

export async function startRedis(options: { appendonly?: boolean; appendfsync?: 'always' | 'everysec' | 'no'; replicaOf?: number } = {}): Promise<TestRedis> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'vigil-redis-'));
  const server = new RedisProcess(port, dir, options);
  await server.start();
  const clients = new Set<Redis>();
  const url = `redis://127.0.0.1:${port}`;
  return {
    url,
    port,
    client() {
      const c = new Redis(url, { lazyConnect: false, maxRetriesPerRequest: 2 });
      c.on('error', () => {});
      clients.add(c);
      return c;
    },
    async stop() {
      for (const c of clients) c.disconnect();
      clients.clear();
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
    kill: () => server.kill(),
    async pause(ms: number) {
      await redisCli(['-p', String(port), 'CLIENT', 'PAUSE', String(ms), 'ALL']);
    },
    async restart() {
      await server.stop();
      await server.start();
    },
    async shutdownAndRestart() {
      await redisCli(['-p', String(port), 'SHUTDOWN']).catch(() => undefined); // the connection closes as it answers
      await server.exited;
      await server.start();
    },
  };
}

export interface TestSentinelGroup {
  /** host:port of each sentinel, as in VIGIL_REDIS_SENTINELS. */
  readonly sentinels: string[];
  readonly masterName: string;
  /** Port of the master the sentinels name now. */
  master(): Promise<number>;
  /** Ports of every data server still running (master and replicas). */
  running(): number[];
  /** SIGKILLs the data server on this port (a crashed master). */
  kill(port: number): Promise<void>;
  /** The data server on this port answers nothing for `ms` but keeps its connections (CLIENT PAUSE ALL): a hung master. */
  pause(port: number, ms: number): Promise<void>;
  /** Resolves with the new master's port once the sentinels promoted one other than `old` and it has `replicas` replicas online. */
  failedOver(old: number, replicas: number, timeoutMs?: number): Promise<number>;
  /** What every sentinel names as master, each data server's INFO replication and the tail of every log: for a failed test's output. */
  describe(logLines?: number): Promise<string>;
  stop(): Promise<void>;
}

/**
 * A replicated Redis watched by Sentinels: a master, `replicas` replicas and `sentinels`
 * redis-sentinel processes (quorum 2), all on loopback ports, announcing 127.0.0.1, with a
 * master declared down after 1 s so a failover takes a few seconds.
 */
export async function startSentinelGroup(options: { replicas?: number; sentinels?: number; appendonly?: boolean } = {}): Promise<TestSentinelGroup> {
  const dir = mkdtempSync(join(tmpdir(), 'vigil-sentinel-'));
  const masterName = 'vigil-test';
  const data: RedisProcess[] = [];
  const watchers: SentinelProcess[] = [];
  const stopAll = async () => {
    await Promise.all([...data, ...watchers].map((p) => p.kill()));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const masterPort = await freePort();
    const first = new RedisProcess(masterPort, mkdtempSync(join(dir, 'm-')), { appendonly: options.appendonly, logfile: true });
    data.push(first);
    await first.start();
    for (let i = 0; i < (options.replicas ?? 2); i++) {
      const r = new RedisProcess(await freePort(), mkdtempSync(join(dir, 'r-')), { appendonly: options.appendonly, replicaOf: masterPort, logfile: true });
      data.push(r);
      await r.start();
    }
    await waitFor(async () => (await redisCli(['-p', String(masterPort), 'INFO', 'replication'])).includes(`connected_slaves:${data.length - 1}`), 20000, 'replicas connected');
    for (let i = 0; i < (options.sentinels ?? 3); i++) {
      const s = new SentinelProcess(await freePort(), mkdtempSync(join(dir, 's-')), masterName, masterPort);
      watchers.push(s);
      await s.start();
    }
    const sentinels = watchers.map((w) => `127.0.0.1:${w.port}`);
    const master = async (): Promise<number> => {
      for (const w of watchers) {
        if (!w.running) continue;
        try {
          const out = (await redisCli(['-p', String(w.port), 'SENTINEL', 'get-master-addr-by-name', masterName], 3000)).trim().split('\n');
          if (out.length >= 2) return Number(out[1]);
        } catch {
          // try the next sentinel
        }
      }
      throw new Error('no sentinel answered');
    };
    // every sentinel has found the others and the replicas: a failover can be agreed on
    await waitFor(async () => {
      for (const w of watchers) {
        const info = await redisCli(['-p', String(w.port), 'SENTINEL', 'master', masterName], 3000);
        const field = (name: string) => Number(new RegExp(`(?:^|\\n)${name}\\n(\\d+)`).exec(info)?.[1] ?? -1);
        if (field('num-other-sentinels') !== watchers.length - 1 || field('num-slaves') !== data.length - 1) return false;
      }
      return true;
    }, 30000, 'sentinels discovered each other and the replicas');
    return {
      sentinels,
      masterName,
      master,
      running: () => data.filter((d) => d.running).map((d) => d.port),
      async kill(port) {
        await data.find((d) => d.port === port)?.kill();
      },
      async pause(port, ms) {
        await redisCli(['-p', String(port), 'CLIENT', 'PAUSE', String(ms), 'ALL']);
      },
      async failedOver(old, replicas, timeoutMs = 30000) {
        let now = old;
        await waitFor(async () => {
          now = await master().catch(() => old);
          if (now === old) return false;
          const info = await redisCli(['-p', String(now), 'INFO', 'replication'], 3000).catch(() => '');
          if (!info.includes('role:master')) return false;
          const online = [...info.matchAll(/^slave\d+:.*state=online/gm)].length;
          return online >= replicas;
        }, timeoutMs, `a replica promoted in place of ${old} with ${replicas} replica(s) online`);
        return now;
      },
      async describe(logLines = 15) {
        const out: string[] = [];
        for (const w of watchers) {
          const named = !w.running ? 'exited' : await redisCli(['-p', String(w.port), 'SENTINEL', 'get-master-addr-by-name', masterName], 3000).then((o) => o.trim().split('\n').join(':'), (err: Error) => err.message);
          out.push(`sentinel :${w.port} names master ${named}`, w.logTail(logLines));
        }
        for (const d of data) {
          const info = !d.running ? 'exited' : await redisCli(['-p', String(d.port), 'INFO', 'replication'], 3000).then(
            (o) => o.split('\r\n').filter((l) => /^(role|master_host|master_port|master_link_status|master_repl_offset|connected_slaves|slave\d+):/.test(l)).join(' '),
            (err: Error) => err.message,
          );
          out.push(`redis :${d.port}: ${info}`, d.logTail(logLines));
        }
        return out.join('\n');
      },
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

async function waitFor(cond: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

/** One redis-sentinel (or redis-server --sentinel where the Debian package is missing). */
class SentinelProcess extends RedisProcess {
  constructor(port: number, dir: string, readonly masterName: string, readonly masterPort: number) {
    super(port, dir, {});
  }

  protected override command(): [string, string[]] {
    // the sentinel rewrites its own config file: one per process, in its own directory
    const conf = join(this.dir, 'sentinel.conf');
    writeFileSync(
      conf,
      [
        `port ${this.port}`,
        'bind 127.0.0.1',
        'protected-mode no',
        `dir ${this.dir}`,
        'loglevel notice',
        `logfile ${this.logPath}`,
        'sentinel announce-ip 127.0.0.1',
        `sentinel monitor ${this.masterName} 127.0.0.1 ${this.masterPort} 2`,
        `sentinel down-after-milliseconds ${this.masterName} 1000`,
        `sentinel failover-timeout ${this.masterName} 4000`,
        `sentinel parallel-syncs ${this.masterName} 2`,
        '',
      ].join('\n'),
    );
    return hasSentinelBinary() ? ['redis-sentinel', [conf]] : ['redis-server', [conf, '--sentinel']];
  }
}

let sentinelBinary: boolean | undefined;
function hasSentinelBinary(): boolean {
  if (sentinelBinary === undefined) {
    try {
      execFileSync('sh', ['-c', 'command -v redis-sentinel'], { stdio: 'ignore' });
      sentinelBinary = true;
    } catch {
      sentinelBinary = false;
    }
  }
  return sentinelBinary;
}

export interface TestRedisCluster {
  /** host:port seeds, as in VIGIL_REDIS_CLUSTER_NODES. */
  readonly nodes: string[];
  stop(): Promise<void>;
}

/** Three masters, no replicas, all 16384 slots assigned and cluster_state:ok. */
export async function startRedisCluster(): Promise<TestRedisCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'vigil-rcluster-'));
  const servers: RedisProcess[] = [];
  const ports = new Set<number>();
  while (ports.size < 3) {
    const p = await freePort(true);
    if (![...ports].some((q) => Math.abs(q - p) === 10000)) ports.add(p);
  }
  try {
    for (const port of ports) {
      const s = new RedisProcess(port, mkdtempSync(join(dir, `n${port}-`)), { cluster: true });
      servers.push(s);
      await s.start();
    }
    const addrs = [...ports].map((p) => `127.0.0.1:${p}`);
    await redisCli(['--cluster', 'create', ...addrs, '--cluster-yes'], 30000);
    const deadline = Date.now() + 20000;
    for (const p of ports) {
      for (;;) {
        const info = await redisCli(['-p', String(p), 'CLUSTER', 'INFO']);
        if (info.includes('cluster_state:ok')) break;
        if (Date.now() > deadline) throw new Error(`cluster node ${p} not ok: ${info}`);
        await sleep(100);
      }
    }
    return {
      nodes: addrs,
      async stop() {
        await Promise.all(servers.map((s) => s.kill()));
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await Promise.all(servers.map((s) => s.kill()));
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
