// Redis connections for the cluster: a standalone server (VIGIL_REDIS_URL), the master a set
// of Redis Sentinels names (VIGIL_REDIS_SENTINELS) or a Redis Cluster
// (VIGIL_REDIS_CLUSTER_NODES), with every Lua script (src/redis/scripts.ts) defined on it,
// every command timed into vigil_redis_command_seconds and every failure counted in
// vigil_redis_errors_total. Scripts are timed under `script:<name>`. Every connection made
// here (the main one, pub/sub subscribers, blocking bus readers) asks the sentinels for the
// master each time it connects, so all of them follow a failover without a restart; one
// +switch-master watch (sentinel-switch.ts) drops those still connected elsewhere.
import { readFileSync } from 'node:fs';
import { Redis, Cluster, type RedisOptions } from 'ioredis';
import { SentinelSwitchWatch, elsewhere, masterAddresses } from './sentinel-switch.js';
import type { Config } from '../config.js';
import { ConfigError } from '../config.js';
import type { Metrics } from '../metrics.js';
import type { Logger } from '../log.js';
import { loadScripts } from './scripts.js';

export type RedisConnection = Redis | Cluster;
export type RedisArg = string | Buffer | number;

export interface RedisTarget {
  readonly url?: string;
  /** host:port seeds of a Redis Cluster; wins over url when non-empty. */
  readonly clusterNodes?: readonly string[];
  /** host:port of Redis Sentinels; wins over url when non-empty (with sentinelMaster). */
  readonly sentinels?: readonly string[];
  readonly sentinelMaster?: string;
  readonly sentinelUsername?: string;
  readonly sentinelPassword?: string;
  readonly sentinelTls?: boolean;
  readonly username?: string;
  readonly password?: string;
  /** TLS to Redis itself (a rediss:// URL turns it on too). */
  readonly tls?: boolean;
  /** PEM CA bundle (contents) for Redis and sentinel certificates. */
  readonly tlsCa?: string;
}

/** The Redis target a config names; reads the CA file (a clear error when it cannot). */
export type RedisTargetConfig = Pick<Config, 'redisUrl' | 'redisClusterNodes'> &
  Partial<Pick<Config, 'redisSentinels' | 'redisSentinelMaster' | 'redisSentinelUsername' | 'redisSentinelPassword' | 'redisSentinelTls' | 'redisUsername' | 'redisPassword' | 'redisTls' | 'redisTlsCa'>>;

export function redisTargetFromConfig(c: RedisTargetConfig): RedisTarget {
  let tlsCa: string | undefined;
  if (c.redisTlsCa) {
    try {
      tlsCa = readFileSync(c.redisTlsCa, 'utf8');
    } catch (err) {
      throw new ConfigError('VIGIL_REDIS_TLS_CA', `cannot read ${c.redisTlsCa}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
  }
  return {
    url: c.redisUrl || undefined,
    clusterNodes: c.redisClusterNodes,
    sentinels: c.redisSentinels,
    sentinelMaster: c.redisSentinelMaster,
    sentinelUsername: c.redisSentinelUsername || undefined,
    sentinelPassword: c.redisSentinelPassword || undefined,
    sentinelTls: !!c.redisSentinelTls,
    username: c.redisUsername || undefined,
    password: c.redisPassword || undefined,
    tls: !!c.redisTls,
    tlsCa,
  };
}

/** Whether a config runs a cluster (any Redis target set). */
export function hasRedisTarget(c: Pick<Config, 'redisUrl' | 'redisClusterNodes' | 'redisSentinels'>): boolean {
  return !!c.redisUrl || c.redisClusterNodes.length > 0 || c.redisSentinels.length > 0;
}

function hostPort(hp: string): { host: string; port: number } {
  const i = hp.lastIndexOf(':');
  return { host: hp.slice(0, i).replace(/^\[(.*)\]$/, '$1'), port: Number(hp.slice(i + 1)) };
}

/** WAIT answered fewer replicas than asked in time, or the connection changed under the writes. */
export class ReplicationTimeoutError extends Error {}

export interface VigilRedisOptions {
  readonly target: RedisTarget;
  readonly metrics?: Metrics;
  readonly log?: Logger;
  /** Fail a command that has not answered in this time (never for blocking connections). */
  readonly commandTimeoutMs?: number;
  /** Replicas a WAIT must confirm before replicated() resolves; 0 = no WAIT. */
  readonly waitReplicas?: number;
  readonly waitTimeoutMs?: number;
}

/** One WAIT shared by every replicated() call of an event-loop turn. */
interface PendingWait {
  readonly promise: Promise<void>;
  readonly generation: number;
}

/**
 * The scripts whose keys vary carry batches (cluster/batcher.ts) and are written at once, not
 * held for the next auto-pipeline: that one waits behind the pipeline in flight, and its reply
 * comes before the batch's callers can hand over the next batch, so every batch would wait
 * two round trips (a connect storm with Redis on the node's CPU ran at half the rate).
 */
const BATCHED_SCRIPTS = (): string[] => [...loadScripts().values()].filter((d) => d.numberOfKeys === undefined).map((d) => d.command);

/**
 * The bus's commands (cluster/bus.ts) carry a whole event-loop turn's messages to one node (or
 * acknowledge a read's entries) and are written at once too. Auto-pipelined, each went out in
 * an ioredis Pipeline of its own (the bus sends about one per turn), and building a Pipeline
 * copies every defined script onto it: written directly, cross-node QoS 0 pairs took 1.9–2.7 µs
 * less of the publishing node's CPU per message. They keep their order on the connection (a
 * WAIT sent after them still covers them).
 */
const NOT_AUTO_PIPELINED = (): string[] => [...BATCHED_SCRIPTS(), 'xadd', 'xack', 'xdel'];

/** At most one "WAIT timed out" log line per this many ms (the metric counts each). */
const WAIT_LOG_EVERY_MS = 10_000;

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
  private readonly siblings = new Set<VigilRedis>();

  /** Bumped each time the main connection is (re)established: see replicated(). */
  private connectionGeneration = 0;
  private nextWait?: PendingWait;
  private waitTimeouts = { count: 0, loggedAtMs: -Infinity };
  private static readonly noWait = Promise.resolve();
  /** Sentinel mode: the +switch-master watch for this instance's connections and its siblings' (none on a sibling). */
  private readonly switchWatch?: SentinelSwitchWatch;

  constructor(private readonly options: VigilRedisOptions, watched = true) {
    this.client = this.connect({ autoPipelining: true, commandTimeoutMs: options.commandTimeoutMs });
    this.client.on('ready', () => this.connectionGeneration++);
    const { target } = options;
    if (watched && !(target.clusterNodes && target.clusterNodes.length > 0) && target.sentinels && target.sentinels.length > 0) {
      this.switchWatch = new SentinelSwitchWatch(target.sentinels.map(hostPort), target.sentinelMaster ?? '', this.sentinelOptions(), (host, port) => void this.switched(host, port));
    }
  }

  /** Identifies the main connection now; pass it to replicated() for writes issued from here on. */
  get generation(): number {
    return this.connectionGeneration;
  }

  /** Whether acknowledgements wait for replicas (VIGIL_REDIS_WAIT_REPLICAS > 0). */
  get waitsForReplicas(): boolean {
    return (this.options.waitReplicas ?? 0) > 0;
  }

  /**
   * Resolves once Redis WAIT confirmed the configured number of replicas hold every write the
   * main connection had answered when this was called (WAIT covers the writes made on its own
   * connection before it). All calls of one event-loop turn share one WAIT. Rejects with
   * ReplicationTimeoutError when fewer replicas confirmed in time, or when the connection was
   * re-established after `since` (the writes went to a server this WAIT cannot ask about —
   * after a failover, a master that may have died with them). Resolves at once when off.
   */
  replicated(since: number): Promise<void> {
    if (!this.waitsForReplicas) return VigilRedis.noWait;
    if (since !== this.connectionGeneration) return Promise.reject(this.replicationFailed('the Redis connection changed under the writes'));
    if (this.nextWait && this.nextWait.generation === since) return this.nextWait.promise;
    const generation = this.connectionGeneration;
    const promise = new Promise<void>((resolve, reject) => {
      // after every write answered in this turn has called in
      setImmediate(() => {
        if (this.nextWait?.promise === promise) this.nextWait = undefined;
        const want = this.options.waitReplicas!;
        (this.client as Redis).wait(want, this.options.waitTimeoutMs ?? 500).then(
          (acked) => {
            if (generation !== this.connectionGeneration) reject(this.replicationFailed('the Redis connection changed during WAIT'));
            else if (acked < want) reject(this.replicationFailed(`WAIT confirmed ${acked} of ${want} replicas`));
            else resolve();
          },
          (err: Error) => reject(this.replicationFailed(`WAIT failed: ${err.message}`)),
        );
      });
    });
    this.nextWait = { promise, generation };
    return promise;
  }

  private replicationFailed(why: string): ReplicationTimeoutError {
    this.options.metrics?.redisWaitTimeoutsTotal.inc();
    const t = this.waitTimeouts;
    t.count++;
    const now = Date.now();
    if (now - t.loggedAtMs >= WAIT_LOG_EVERY_MS) {
      this.options.log?.warn({ why, replicas: this.options.waitReplicas, timeoutMs: this.options.waitTimeoutMs, failedSinceLastLog: t.count }, 'writes not confirmed by Redis replicas: not acknowledged');
      t.loggedAtMs = now;
      t.count = 0;
    }
    return new ReplicationTimeoutError(`not replicated: ${why}`);
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
    if (def.numberOfKeys !== undefined && keys.length !== def.numberOfKeys) throw new Error(`${def.file} takes ${def.numberOfKeys} keys, got ${keys.length}`);
    const fn = (this.client as unknown as Record<string, (...a: RedisArg[]) => Promise<unknown>>)[`${command}Buffer`];
    const end = this.options.metrics?.redisCommandSeconds.startTimer({ command: `script:${command}` });
    try {
      // a script whose keys vary (`KEYS vary:`) is told their count with each call
      if (def.numberOfKeys === undefined) return await fn.call(this.client, keys.length, ...keys, ...args);
      return await fn.call(this.client, ...keys, ...args);
    } catch (err) {
      this.options.metrics?.redisErrorsTotal.inc({ kind: errorKind(err) });
      throw err;
    } finally {
      end?.();
    }
  }

  /**
   * The same Redis on a connection of its own that never waits for replicas: lease renewals
   * must not queue behind a WAIT of the main connection. Closed by close().
   */
  sibling(): VigilRedis {
    const other = new VigilRedis({ ...this.options, waitReplicas: 0 }, false);
    this.siblings.add(other);
    return other;
  }

  async close(): Promise<void> {
    this.switchWatch?.close();
    const all = [this.client, ...this.extra];
    this.extra.clear();
    const siblings = [...this.siblings];
    this.siblings.clear();
    await Promise.all([...all.map(closeConnection), ...siblings.map((s) => s.close())]);
  }

  /** Every connection of this instance and of its siblings. */
  private connections(): RedisConnection[] {
    return [this.client, ...this.extra, ...[...this.siblings].flatMap((s) => s.connections())];
  }

  /**
   * A sentinel announced a new master: a connection still connected to another server is
   * dropped and reconnects through the sentinels. One that is connecting is left alone (it
   * is asking the sentinels now); one already on the new master stays.
   */
  private async switched(host: string, port: number): Promise<void> {
    const addresses = await masterAddresses(host);
    let dropped = 0;
    for (const c of this.connections()) {
      if (!(c instanceof Redis) || (c.status !== 'ready' && c.status !== 'connect') || !c.stream) continue;
      if (!elsewhere(c.stream, addresses, port)) continue;
      c.stream.destroy();
      dropped++;
    }
    this.options.log?.info({ host, port, dropped }, 'sentinel announced a new Redis master');
  }

  /** Credentials and TLS for talking to the sentinels themselves. */
  private sentinelOptions(): RedisOptions {
    const { target } = this.options;
    return {
      ...(target.sentinelUsername ? { username: target.sentinelUsername } : {}),
      ...(target.sentinelPassword ? { password: target.sentinelPassword } : {}),
      ...(target.sentinelTls ? { tls: { ...(target.tlsCa ? { ca: target.tlsCa } : {}) } } : {}),
    };
  }

  private connect(o: { autoPipelining: boolean; commandTimeoutMs?: number }): RedisConnection {
    const { target, log } = this.options;
    const tls = target.tls || target.url?.startsWith('rediss://') ? { ...(target.tlsCa ? { ca: target.tlsCa } : {}) } : undefined;
    const redisOptions: RedisOptions = {
      // fail fast so lease renewals notice an outage; callers retry on their own schedule
      maxRetriesPerRequest: 1,
      commandTimeout: o.commandTimeoutMs,
      enableAutoPipelining: o.autoPipelining,
      autoPipeliningIgnoredCommands: NOT_AUTO_PIPELINED(),
      retryStrategy: (times) => Math.min(50 * times, 1000),
      // a restarted Redis answers LOADING while it reads its AOF, reporting an ETA in whole
      // seconds (0 while short): ioredis would wait 1 s before asking again, long enough for
      // every node's lease to go unconfirmed after a restart that took a few hundred ms
      maxLoadingRetryTime: 50,
      // a master demoted by a failover (it came back, or a sentinel reconfigured it) answers
      // writes with READONLY: reconnect, which asks the sentinels for the master again; the
      // failed command fails (its caller retries, nothing is acknowledged on it)
      reconnectOnError: (err) => err.message.startsWith('READONLY'),
      ...(target.username ? { username: target.username } : {}),
      ...(target.password ? { password: target.password } : {}),
      ...(tls ? { tls } : {}),
    };
    let client: RedisConnection;
    if (target.clusterNodes && target.clusterNodes.length > 0) {
      client = new Cluster(target.clusterNodes.map(hostPort), {
        redisOptions,
        enableAutoPipelining: o.autoPipelining,
        // also: auto-pipelining picks a command's slot from its first argument, which for a
        // script whose keys vary is the key count; sent on their own they go by their keys
        autoPipeliningIgnoredCommands: NOT_AUTO_PIPELINED(),
        clusterRetryStrategy: (times) => Math.min(100 * times, 2000),
      });
    } else if (target.sentinels && target.sentinels.length > 0) {
      client = new Redis({
        ...redisOptions,
        sentinels: target.sentinels.map(hostPort),
        name: target.sentinelMaster,
        role: 'master',
        sentinelUsername: target.sentinelUsername,
        sentinelPassword: target.sentinelPassword,
        ...(target.sentinelTls ? { sentinelTLS: { ...(target.tlsCa ? { ca: target.tlsCa } : {}) } } : {}),
        enableTLSForSentinelMode: !!tls,
        // asked of every sentinel in turn each time a connection (re)connects
        sentinelRetryStrategy: (times) => Math.min(100 * times, 1000),
        // not ioredis's failoverDetector: its disconnect during a reconnect ends the connection
        // for good; this.switchWatch drops connections on +switch-master instead
        failoverDetector: false,
      });
    } else if (target.url) {
      client = new Redis(target.url, redisOptions);
    } else {
      throw new Error('Redis needs a URL, sentinels or cluster nodes');
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
