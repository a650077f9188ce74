// Vigil nodes as real processes (node dist/src/cli.js) on one Redis, for cluster tests:
// each listens on free loopback ports and can be stopped gracefully or SIGKILLed.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ClientPool, TestClient } from './mqtt.js';
import { jwksDocument, type TempDir, type TestKey } from './jwt.js';
import { randomPrefix } from './redis.js';
import type { Redis } from 'ioredis';
import { ClusterKeys } from '../../src/cluster/keys.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

export interface VigilNode {
  readonly nodeId: string;
  readonly port: number;
  readonly metricsPort: number;
  readonly url: string;
  readonly pid: number;
  /** Every JSON log line so far. */
  readonly logs: Record<string, unknown>[];
  kill(signal?: NodeJS.Signals): Promise<void>;
  stop(): Promise<void>;
  ready(): Promise<boolean>;
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  /**
   * What the node's main thread is doing now, for a failure's diagnosis: the JavaScript stack
   * and the libuv handles of a Node diagnostic report (SIGUSR2, `--report-on-signal`). V8
   * writes it between two JS instructions, so a node whose event loop is stuck in a loop
   * answers too. undefined when no report came within 5 s (or the node has exited).
   */
  stack(): Promise<string | undefined>;
  /** How the process ended (undefined while it runs) and the end of what it wrote to stderr: a crash says why there. */
  exit(): { code: number | null; signal: NodeJS.Signals | null; stderrTail: string } | undefined;
}

export interface NodeOptions {
  readonly redisUrl?: string;
  readonly redisClusterNodes?: string;
  readonly prefix: string;
  readonly nodeId: string;
  readonly env?: Record<string, string>;
}

export async function startNode(o: NodeOptions, timeoutMs = 15000): Promise<VigilNode> {
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    VIGIL_MQTT_PORT: '0',
    VIGIL_METRICS_PORT: '0',
    VIGIL_BIND: '127.0.0.1',
    VIGIL_METRICS_BIND: '127.0.0.1',
    VIGIL_NODE_ID: o.nodeId,
    VIGIL_REDIS_PREFIX: o.prefix,
    VIGIL_LOG_LEVEL: 'info',
    VIGIL_SYS_INTERVAL_S: '0',
    VIGIL_HEARTBEAT_MS: '250',
    VIGIL_NODE_TIMEOUT_MS: '1500',
    ...(o.redisUrl ? { VIGIL_REDIS_URL: o.redisUrl } : {}),
    ...(o.redisClusterNodes ? { VIGIL_REDIS_CLUSTER_NODES: o.redisClusterNodes } : {}),
    ...o.env,
  };
  // VIGIL_TEST_NODE_ARGS: extra node flags for every node, e.g. "--cpu-prof --cpu-prof-dir=/tmp/p"
  const reports = mkdtempSync(join(tmpdir(), 'vigil-node-report-'));
  const reportArgs = ['--report-on-signal', '--report-signal=SIGUSR2', `--report-directory=${reports}`];
  const proc = spawn(process.execPath, [...reportArgs, ...(process.env.VIGIL_TEST_NODE_ARGS ? process.env.VIGIL_TEST_NODE_ARGS.split(' ') : []), CLI], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(proc);
  const logs: Record<string, unknown>[] = [];
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr = (stderr + d).slice(-65536)));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  void exited.then(() => {
    live.delete(proc);
    rmSync(reports, { recursive: true, force: true });
  });
  const listening = new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`node ${o.nodeId} did not start: ${stderr}`)), timeoutMs);
    void exited.then(() => reject(new Error(`node ${o.nodeId} exited: ${stderr}`)));
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line);
      } catch {
        return;
      }
      logs.push(entry);
      // a bug the node survived (cli.ts logs it instead of ending): shown in the test's output
      if (entry.msg === 'unhandled promise rejection (a bug); going on') process.stdout.write(`# node ${o.nodeId}: unhandled promise rejection: ${String(entry.err).split('\n').join('\n#   ')}\n`);
      if (entry.msg === 'vigil listening') {
        clearTimeout(timer);
        resolve(entry);
      }
    });
  });
  const info = await listening;
  const metricsPort = info.metricsPort as number;
  return {
    nodeId: o.nodeId,
    port: info.mqttPort as number,
    metricsPort,
    url: `mqtt://127.0.0.1:${info.mqttPort}`,
    pid: proc.pid!,
    logs,
    async kill(signal = 'SIGKILL') {
      proc.kill(signal);
      await exited;
    },
    async stop() {
      // graceful first; a node whose shutdown hangs (e.g. Redis already gone) is killed
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
    exit() {
      if (proc.exitCode === null && proc.signalCode === null) return undefined;
      return { code: proc.exitCode, signal: proc.signalCode, stderrTail: stderr.slice(-4000) };
    },
    async stack() {
      if (proc.exitCode !== null || proc.signalCode !== null) return undefined;
      const before = new Set(readdirSync(reports));
      proc.kill('SIGUSR2');
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline) {
        const file = readdirSync(reports).find((f) => !before.has(f) && f.endsWith('.json'));
        if (file) {
          try {
            const r = JSON.parse(readFileSync(join(reports, file), 'utf8')) as { javascriptStack?: { message?: string; stack?: string[] }; libuv?: { type: string; is_active?: boolean }[] };
            const handles = new Map<string, number>();
            for (const h of r.libuv ?? []) if (h.is_active) handles.set(h.type, (handles.get(h.type) ?? 0) + 1);
            const frames = r.javascriptStack?.stack ?? [];
            return [frames.length === 0 || /No stack/i.test(frames[0] ?? '') ? 'javascript: idle (no JavaScript running)' : `javascript: ${r.javascriptStack?.message ?? ''}`, ...frames.map((f) => `  ${f}`), `active libuv handles: ${[...handles].map(([t, n]) => `${t} ${n}`).join(', ')}`].join('\n');
          } catch {
            // still being written
          }
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      return undefined;
    },
    async ready() {
      try {
        return (await fetch(`http://127.0.0.1:${metricsPort}/readyz`)).status === 200;
      } catch {
        return false;
      }
    },
    async metric(name, labels = {}) {
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      let sum = 0;
      for (const line of text.split('\n')) {
        if (!line.startsWith(name)) continue;
        const m = /^([a-z_]+)(\{([^}]*)\})? (\S+)$/.exec(line);
        if (!m || m[1] !== name) continue;
        const got = Object.fromEntries([...(m[3] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
        if (Object.entries(labels).every(([k, v]) => got[k] === v)) sum += Number(m[4]);
      }
      return sum;
    },
  };
}

export async function waitUntil(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * Until the publisher's node routes `topic` to the subscriber (on another node: its route
 * reaches the publisher's node through Redis): a QoS 1 'probe' is published again until one
 * arrives. The subscriber must be subscribed to `topic` already.
 */
export async function untilRouted(publisher: TestClient, subscriber: TestClient, topic: string, what: string): Promise<void> {
  await waitUntil(async () => {
    await publisher.mqtt.publishAsync(topic, 'probe', { qos: 1 });
    return subscriber.messages.some((m) => m.topic === topic && m.payload === 'probe');
  }, 10_000, what);
}

/** The bus stream key of a node's current member (read from the leases); throws when the node has no lease. */
export async function busStreamKey(redis: Redis, prefix: string, nodeId: string): Promise<string> {
  const keys = new ClusterKeys(prefix);
  const member = (await redis.zrange(keys.nodeLeases, 0, -1)).find((m) => m.startsWith(`${nodeId}/`));
  if (!member) throw new Error(`node ${nodeId} has no lease`);
  return keys.nodeBus(member);
}

/** A node's log lines with this message, in order. */
export function logged(n: VigilNode, msg: string): VigilNode['logs'] {
  return n.logs.filter((l) => l.msg === msg);
}

/**
 * Waits until the node has been up for longer than its node timeout: a member reads a peer's
 * wills ahead or reaps it only after it has been a cluster owner for one node timeout, so a
 * peer stopped sooner would be reaped late, not read ahead. The node logs when it started
 * listening; the wait is a lower bound, with no upper bound on a busy machine.
 */
export async function upForNodeTimeout(n: VigilNode, nodeTimeoutMs: number): Promise<void> {
  const upAt = Number(n.logs.find((l) => l.msg === 'vigil listening')!.time);
  await waitUntil(() => Date.now() - upAt > nodeTimeoutMs + 500, 20_000, `node ${n.url} up for a node timeout`);
}

/** The two clients the route helpers below need (mqtt.ts's TestClient fits). */
interface RouteProbeClient {
  readonly mqtt: { subscribeAsync(topic: string, opts: { qos: 0 | 1 | 2 }): Promise<unknown>; publishAsync(topic: string, payload: string, opts: { qos: 0 | 1 | 2 }): Promise<unknown> };
  readonly messages: readonly { readonly topic: string; readonly payload: string }[];
}

let probes = 0;

/**
 * Waits until the publisher's node routes to the subscriber's node for every subscription the
 * subscriber made so far: the subscriber subscribes to a probe topic last (one node's route
 * changes reach the others in the order it made them), and the publisher sends probes (QoS 0)
 * until one arrives. A condition, not a guess at how long propagation takes.
 */
export async function waitForRoutes(pub: RouteProbeClient, sub: RouteProbeClient, timeoutMs = 20_000): Promise<void> {
  const topic = `route-probe/${process.pid}/${++probes}`;
  await sub.mqtt.subscribeAsync(topic, { qos: 0 });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    await pub.mqtt.publishAsync(topic, 'probe', { qos: 0 });
    const until = Date.now() + 100;
    while (Date.now() < until) {
      if (sub.messages.some((m) => m.topic === topic)) return;
      await new Promise((r) => setTimeout(r, 10));
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for routes to reach the publisher's node`);
  }
}

/**
 * A persistent 5.0 session (`<name>-sub`) subscribed to `topic` at QoS 1 on `home`, with the
 * route to it known on `other`, where a publisher (`<name>-pub`) is connected; the session
 * then disconnects and is offline on `home`. Returns the publisher and the options that resume
 * the session.
 */
export async function offlineSubscriber(clients: ClientPool, home: VigilNode, other: VigilNode, name: string, topic: string) {
  const session = { clientId: `${name}-sub`, protocolVersion: 5 as const, clean: false, properties: { sessionExpiryInterval: 600 } };
  const sub = await clients.connect(home.url, session);
  await sub.mqtt.subscribeAsync(topic, { qos: 1 });
  const pub = await clients.connect(other.url, { clientId: `${name}-pub`, protocolVersion: 5 });
  await waitForRoutes(pub, sub);
  await sub.mqtt.endAsync();
  await waitUntil(async () => (await home.metric('vigil_sessions_current', { state: 'offline' })) >= 1, 10_000, `the session offline on ${home.nodeId}`);
  return { pub, session };
}

/**
 * Waits until everything the publisher sent on `topic` so far has been delivered: it sends an
 * end marker on the same topic and QoS (delivered in order after the others), and resolves
 * with the messages on `topic` before the marker. A copy arriving after the marker would be a
 * redelivery, which QoS 1/2 in order between two clients does not do.
 */
export async function drained(pub: RouteProbeClient, sub: RouteProbeClient, topic: string, qos: 0 | 1 | 2, timeoutMs = 20_000): Promise<{ readonly topic: string; readonly payload: string }[]> {
  const marker = `end-of-run-${++probes}`;
  await pub.mqtt.publishAsync(topic, marker, { qos });
  await waitUntil(() => sub.messages.some((m) => m.topic === topic && m.payload === marker), timeoutMs, `the end marker on ${topic}`);
  const onTopic = sub.messages.filter((m) => m.topic === topic);
  return onTopic.slice(0, onTopic.findIndex((m) => m.payload === marker));
}

/**
 * Nodes A and B on one Redis in jwt mode: RS256 tokens of `keys` (a JWKS file in `dir`) and
 * the ACL `policy` (a file in `dir`), under a fresh prefix named after `name`; both ready.
 */
export async function startJwtPair(o: { redisUrl: string; dir: TempDir; keys: readonly TestKey[]; policy: object; name: string }): Promise<[VigilNode, VigilNode]> {
  const env = {
    VIGIL_AUTH: 'jwt',
    VIGIL_JWKS: await o.dir.write('jwks.json', jwksDocument([...o.keys])),
    VIGIL_ACL: await o.dir.write('acl.json', o.policy),
    VIGIL_JWT_ALGORITHMS: 'RS256',
  };
  const prefix = randomPrefix(o.name);
  const pair = await Promise.all([startNode({ redisUrl: o.redisUrl, prefix, nodeId: 'a', env }), startNode({ redisUrl: o.redisUrl, prefix, nodeId: 'b', env })]);
  await waitUntil(async () => (await pair[0].ready()) && (await pair[1].ready()), 10000, 'nodes ready');
  return pair;
}
