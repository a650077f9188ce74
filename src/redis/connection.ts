// Redis connections for the cluster: a standalone server (VIGIL_REDIS_URL) or a Redis
// Cluster (VIGIL_REDIS_CLUSTER_NODES), with every Lua script (src/redis/scripts.ts) defined on it,
// every command timed into vigil_redis_command_seconds and every failure counted in
// vigil_redis_errors_total. Scripts are timed under `script:<name>`.
import { Redis, Cluster, type RedisOptions } from 'ioredis';
import type { Metrics } from '../metrics.js';
import type { Logger } from '../log.js';
import { loadScripts } from './scripts.js';

export type RedisConnection = Redis | Cluster;
export type RedisArg = string | Buffer | number;

export interface RedisTarget {
  readonly url?: string;
  /** host:port seeds of a Redis Cluster; wins over url when non-empty. */
  readonly clusterNodes?: readonly string[];
}

export interface VigilRedisOptions {
  readonly target: RedisTarget;
  readonly metrics?: Metrics;
  readonly log?: Logger;
  /** Fail a command that has not answered in this time (never for blocking connections). */
  readonly commandTimeoutMs?: number;
}

interface TimedCommand {
  name: string;
  promise: Promise<unknown>;
}

function errorKind(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  if (/timed out/i.test(msg)) return 'timeout';
  if (/Connection is closed|ECONNREFUSED|ECONNRESET|EPIPE|max retries|Stream isn't writeable/i.test(msg)) return 'connection';
  const code = /^([A-Z]{3,})\b/.exec(msg);
  return code ? code[1].toLowerCase() : 'other';
}

export class VigilRedis {
  /** For ordinary commands and scripts (auto-pipelined). */
  readonly client: RedisConnection;
  private readonly extra = new Set<RedisConnection>();

  constructor(private readonly options: VigilRedisOptions) {
    this.client = this.connect({ autoPipelining: true, commandTimeoutMs: options.commandTimeoutMs });
  }

  get isCluster(): boolean {
    return this.client instanceof Cluster;
  }

  /**
   * Another connection to the same Redis: pub/sub subscribers and blocking reads (XREADGROUP
   * BLOCK) need their own. Closed by close().
   */
  duplicate(opts: { blocking?: boolean } = {}): RedisConnection {
    const c = this.connect({ autoPipelining: false, commandTimeoutMs: opts.blocking ? undefined : this.options.commandTimeoutMs });
    this.extra.add(c);
    return c;
  }

  /** Runs a Lua script (src/store/redis/lua, src/cluster/lua) by command name; binary-safe (Buffers in the reply). */
  async run(command: string, keys: readonly string[], args: readonly RedisArg[]): Promise<unknown> {
    const def = loadScripts().get(command);
    if (!def) throw new Error(`no Lua script ${command}`);
    if (keys.length !== def.numberOfKeys) throw new Error(`${def.file} takes ${def.numberOfKeys} keys, got ${keys.length}`);
    const fn = (this.client as unknown as Record<string, (...a: RedisArg[]) => Promise<unknown>>)[`${command}Buffer`];
    const end = this.options.metrics?.redisCommandSeconds.startTimer({ command: `script:${command}` });
    try {
      return await fn.call(this.client, ...keys, ...args);
    } catch (err) {
      this.options.metrics?.redisErrorsTotal.inc({ kind: errorKind(err) });
      throw err;
    } finally {
      end?.();
    }
  }

  async close(): Promise<void> {
    const all = [this.client, ...this.extra];
    this.extra.clear();
    await Promise.all(all.map(closeConnection));
  }

  private connect(o: { autoPipelining: boolean; commandTimeoutMs?: number }): RedisConnection {
    const { target, log } = this.options;
    const redisOptions: RedisOptions = {
      // fail fast so lease renewals notice an outage; callers retry on their own schedule
      maxRetriesPerRequest: 1,
      commandTimeout: o.commandTimeoutMs,
      enableAutoPipelining: o.autoPipelining,
      retryStrategy: (times) => Math.min(50 * times, 1000),
    };
    let client: RedisConnection;
    if (target.clusterNodes && target.clusterNodes.length > 0) {
      const seeds = target.clusterNodes.map((hp) => {
        const i = hp.lastIndexOf(':');
        return { host: hp.slice(0, i), port: Number(hp.slice(i + 1)) };
      });
      client = new Cluster(seeds, { redisOptions, enableAutoPipelining: o.autoPipelining, clusterRetryStrategy: (times) => Math.min(100 * times, 2000) });
    } else if (target.url) {
      client = new Redis(target.url, redisOptions);
    } else {
      throw new Error('Redis needs a URL or cluster nodes');
    }
    client.on('error', (err: Error) => {
      this.options.metrics?.redisErrorsTotal.inc({ kind: 'connection' });
      log?.warn({ err: err.message }, 'redis connection error');
    });
    for (const def of loadScripts().values()) client.defineCommand(def.command, { numberOfKeys: def.numberOfKeys, lua: def.lua });
    this.instrument(client);
    return client;
  }

  /** Times every command sent through this connection object (scripts are timed in run()). */
  private instrument(client: RedisConnection): void {
    const metrics = this.options.metrics;
    if (!metrics) return;
    const c = client as unknown as { sendCommand: (cmd: TimedCommand, ...rest: unknown[]) => unknown };
    const original = c.sendCommand.bind(client);
    c.sendCommand = (cmd: TimedCommand, ...rest: unknown[]) => {
      const name = cmd.name;
      if (name === 'evalsha' || name === 'eval') return original(cmd, ...rest);
      const end = metrics.redisCommandSeconds.startTimer({ command: name });
      cmd.promise.then(
        () => end(),
        (err: unknown) => {
          end();
          metrics.redisErrorsTotal.inc({ kind: errorKind(err) });
        },
      );
      return original(cmd, ...rest);
    };
  }
}

/** Reply helpers: scripts run with the Buffer variant answer Buffers for bulk strings. */
/** Closes a connection politely (QUIT), or at once when it cannot (Redis away). */
export async function closeConnection(c: RedisConnection): Promise<void> {
  try {
    await c.quit();
  } catch {
    c.disconnect();
  }
}

export function str(v: unknown): string {
  if (Buffer.isBuffer(v)) return v.toString('utf8');
  if (v === null || v === undefined) return '';
  return String(v);
}
export function num(v: unknown): number {
  if (typeof v === 'number') return v;
  return Number(str(v));
}
export function buf(v: unknown): Buffer | undefined {
  if (Buffer.isBuffer(v)) return v.length === 0 ? undefined : v;
  if (typeof v === 'string' && v !== '') return Buffer.from(v, 'binary');
  return undefined;
}
