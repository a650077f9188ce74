// Real redis-server processes for cluster tests: one standalone server, or a 3-master Redis
// Cluster, each on free loopback ports in its own temp dir, with no persistence unless asked.
// Every process started here is killed by stop() and, as a last resort, when the test
// process exits. Each test should also use its own random key prefix (randomPrefix()).
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
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
}

interface ServerOptions {
  appendonly?: boolean;
  cluster?: boolean;
  port?: number;
}

class RedisProcess {
  proc?: ChildProcess;
  exited?: Promise<void>;
  constructor(readonly port: number, readonly dir: string, readonly options: ServerOptions) {}

  async start(): Promise<void> {
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir, '--save', '', '--appendonly', this.options.appendonly ? 'yes' : 'no', '--protected-mode', 'no', '--loglevel', 'warning'];
    if (this.options.cluster) args.push('--cluster-enabled', 'yes', '--cluster-config-file', join(this.dir, 'nodes.conf'), '--cluster-node-timeout', '2000');
    const proc = spawn('redis-server', args, { stdio: ['ignore', 'ignore', 'pipe'] });
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
      if (proc.exitCode !== null) throw new Error(`redis-server exited: ${stderr}`);
      try {
        if ((await redisCli(['-p', String(this.port), 'PING'], 2000)).trim() === 'PONG') return;
      } catch {
        // not up yet
      }
      if (Date.now() > deadline) throw new Error(`redis-server on ${this.port} did not answer PING`);
      await sleep(50);
    }
  }

  async kill(): Promise<void> {
    if (!this.proc || this.proc.exitCode !== null) return;
    this.proc.kill('SIGKILL');
    await this.exited;
  }

  async stop(): Promise<void> {
    if (!this.proc || this.proc.exitCode !== null) return;
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc?.kill('SIGKILL'), 3000);
    await this.exited;
    clearTimeout(t);
  }
}

export async function startRedis(options: { appendonly?: boolean } = {}): Promise<TestRedis> {
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
  };
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
