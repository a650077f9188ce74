// The audited QoS 1 / QoS 2 run shared by test/cluster-e2e/audit.test.ts (short) and
// bench/audit.mjs (long): publishers number every message (payload "<publisher>:<seq>"),
// persistent subscribers on every node record what they get, scheduled faults (a node
// SIGKILLed, Redis restarted) happen meanwhile, clients fail over to the other nodes, and at
// the end every message acknowledged to its publisher (PUBACK / PUBCOMP) must have reached
// every subscriber: at least once for QoS 1, exactly once for QoS 2.
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import type { VigilNode } from './cluster.js';

export interface AuditFault {
  readonly atMs: number;
  readonly name: string;
  run(): Promise<void>;
}

export interface AuditOptions {
  readonly nodes: readonly VigilNode[];
  /** Publishers per QoS (1 and 2); publisher i starts on node i % nodes. */
  readonly publishersPerQos: number;
  /** Subscribers; subscriber i starts on node i % nodes. */
  readonly subscribers: number;
  readonly durationMs: number;
  /** Pause between two publishes of one publisher. */
  readonly publishEveryMs: number;
  readonly faults: readonly AuditFault[];
  /** How long each step of the end (outstanding acks, closing the audited set, its deliveries) may wait: settle(). */
  readonly settleMs?: number;
  readonly log?: (line: string) => void;
}

export interface QosAudit {
  readonly qos: 1 | 2;
  readonly published: number;
  readonly acknowledged: number;
  /** Acknowledged payloads missing at some subscriber: "<subscriber> <payload>". */
  readonly lost: string[];
  readonly duplicates: number;
  /** Payloads received more than once: "<subscriber> <payload>", once per extra copy. */
  readonly duplicated: string[];
  /** Messages received that were never acknowledged (allowed: the ack may have been lost). */
  readonly unacknowledgedDelivered: number;
}

export interface AuditResult {
  readonly byQos: readonly QosAudit[];
  readonly timeline: string[];
}

interface Sub {
  readonly name: string;
  readonly client: MqttClient;
  readonly got: Map<string, number>;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** No acknowledgement for this long (and none missing): the audited set of acknowledgements is closed. */
const QUIET_MS = 1000;

/** What settle() watches, and closes. */
export interface SettleState {
  /** Publishes still waiting for their acknowledgement. */
  outstanding(): number;
  /** Audited acknowledged messages some subscriber has not received (yet). */
  missing(): number;
  /** When the last audited acknowledgement came. */
  lastAckMs(): number;
  /** Closes the audited set: acknowledgements from now on are counted, not audited. */
  close(): void;
}

export interface SettleClock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

const realClock: SettleClock = { now: () => Date.now(), sleep };

/**
 * The end of an audit, once publishing stopped: waits (each step up to `settleMs`) for the
 * outstanding acknowledgements, then closes the audited set and gives its deliveries their
 * time. Publishers that reconnected after a fault are still retransmitting and getting
 * acknowledgements here, and each message reaches the subscribers a little after its
 * publisher's acknowledgement (a QoS 2 subscriber has it at the broker's PUBREL, which waits
 * for a store and WAIT of its own). So the set is closed only once every acknowledged message
 * arrived and no acknowledgement came for QUIET_MS (or at the deadline), and its deliveries
 * are waited for after that. (Checking while acknowledgements still came reported a message
 * acknowledged during the check as lost, its deliveries on the way.)
 */
export async function settle(s: SettleState, settleMs: number, clock: SettleClock = realClock): Promise<{ acknowledgedAtMs: number; closedAtMs: number }> {
  let deadline = clock.now() + settleMs;
  while (s.outstanding() > 0 && clock.now() < deadline) await clock.sleep(50);
  const acknowledgedAtMs = clock.now();
  deadline = acknowledgedAtMs + settleMs;
  while ((s.missing() > 0 || (s.outstanding() > 0 && clock.now() - s.lastAckMs() < QUIET_MS)) && clock.now() < deadline) await clock.sleep(100);
  s.close();
  const closedAtMs = clock.now();
  deadline = closedAtMs + settleMs;
  while (s.missing() > 0 && clock.now() < deadline) await clock.sleep(100);
  await clock.sleep(500); // late duplicates
  return { acknowledgedAtMs, closedAtMs };
}

function serversFrom(nodes: readonly VigilNode[], home: number): IClientOptions['servers'] {
  return nodes.map((_, k) => nodes[(home + k) % nodes.length]).map((n) => ({ host: '127.0.0.1', port: n.port }));
}

function persistent(i: number, clientId: string, nodes: readonly VigilNode[]): IClientOptions {
  const v5 = i % 2 === 0;
  return {
    clientId,
    servers: serversFrom(nodes, i % nodes.length),
    protocolVersion: v5 ? 5 : 4,
    clean: false,
    ...(v5 ? { properties: { sessionExpiryInterval: 600 } } : {}),
    reconnectPeriod: 200,
    // a node refusing CONNECT while Redis is away (0x88) must not end the client
    reconnectOnConnackError: true,
    connectTimeout: 2000,
    keepalive: 10,
  };
}

/**
 * Waits until every node routes to every subscriber: each subscriber subscribes to a probe
 * topic after its audit filters (a node's route changes reach the others in the order it made
 * them), and a client on each node publishes probes until each subscriber has one from it.
 */
async function routesEverywhere(nodes: readonly VigilNode[], subs: readonly Sub[], probed: Set<string>, clients: MqttClient[]): Promise<void> {
  for (let i = 0; i < subs.length; i++) await subs[i].client.subscribeAsync(`route-probe/${i}`, { qos: 0 });
  const deadline = Date.now() + 30_000;
  for (const node of nodes) {
    const probe = mqtt.connect({ host: '127.0.0.1', port: node.port, clientId: `aud-probe-${node.nodeId}`, reconnectPeriod: 0, connectTimeout: 10_000 });
    clients.push(probe);
    probe.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      probe.once('connect', () => resolve());
      probe.once('close', () => reject(new Error(`probe client on ${node.nodeId} did not connect`)));
    });
    for (let i = 0; i < subs.length; i++) {
      const key = `route-probe/${i} ${node.nodeId}`;
      while (!probed.has(key)) {
        if (Date.now() > deadline) throw new Error(`routes to ${subs[i].name} did not reach ${node.nodeId}`);
        await probe.publishAsync(`route-probe/${i}`, node.nodeId, { qos: 0 });
        await sleep(50);
      }
    }
    probe.end(true);
  }
}

export async function runAudit(o: AuditOptions): Promise<AuditResult> {
  const t0 = Date.now();
  const timeline: string[] = [];
  const mark = (what: string) => {
    const line = `t+${String(Date.now() - t0).padStart(6)} ms: ${what}`;
    timeline.push(line);
    o.log?.(line);
  };
  const clients: MqttClient[] = [];
  // also ended by the finally below: a fault that throws must not leave the publisher loops
  // running (their timers kept a failed test file alive until the runner's timeout)
  let publishing = true;
  try {
    // subscribers first: persistent sessions on every node
    const subs: Sub[] = [];
    const probed = new Set<string>();
    for (let i = 0; i < o.subscribers; i++) {
      const name = `aud-sub-${i}`;
      const client = mqtt.connect(persistent(i, name, o.nodes));
      clients.push(client);
      const got = new Map<string, number>();
      client.on('message', (topic, payload) => {
        if (topic.startsWith('route-probe/')) return void probed.add(`${topic} ${payload.toString()}`);
        const key = payload.toString();
        got.set(key, (got.get(key) ?? 0) + 1);
      });
      client.on('error', () => undefined);
      let connects = 0;
      client.on('connect', (p) => {
        if (connects++ > 0) mark(`${name} reconnected to :${(client.options as { port?: number }).port} (session present ${p.sessionPresent})`);
      });
      await new Promise<void>((resolve, reject) => {
        client.once('connect', () => resolve());
        setTimeout(() => reject(new Error(`${name} did not connect`)), 5000);
      });
      await client.subscribeAsync({ 'audit/q1/#': { qos: 1 }, 'audit/q2/#': { qos: 2 } });
      subs.push({ name, client, got });
    }
    await routesEverywhere(o.nodes, subs, probed, clients);
    mark(`${o.subscribers} subscribers on ${o.nodes.map((n) => n.nodeId).join(', ')}`);

    const sent = { 1: [] as string[], 2: [] as string[] };
    const acked = { 1: new Set<string>(), 2: new Set<string>() };
    let outstanding = 0;
    /** Acknowledgements count (are audited) until the deliveries are checked; later ones are only counted. */
    let auditing = true;
    let lateAcks = 0;
    let lastAckMs = Date.now();
    const publisherLoops: Promise<void>[] = [];
    for (const qos of [1, 2] as const) {
      for (let j = 0; j < o.publishersPerQos; j++) {
        const name = `aud-pub-q${qos}-${j}`;
        const client = mqtt.connect(persistent(j + qos, name, o.nodes));
        clients.push(client);
        client.on('error', () => undefined);
        // where a publisher went after a failure: a duplicate or a loss is read against it
        let connects = 0;
        client.on('connect', (p) => {
          if (connects++ > 0) mark(`${name} reconnected to :${(client.options as { port?: number }).port} (session present ${p.sessionPresent})`);
        });
        publisherLoops.push(
          (async () => {
            for (let seq = 0; publishing; seq++) {
              const payload = `${name}:${seq}`;
              sent[qos].push(payload);
              outstanding++;
              client.publish(`audit/q${qos}/${name}`, payload, { qos }, (err) => {
                outstanding--;
                if (err) return;
                if (!auditing) return void lateAcks++;
                acked[qos].add(payload);
                lastAckMs = Date.now();
              });
              await sleep(o.publishEveryMs);
            }
          })(),
        );
      }
    }

    // faults, on schedule
    for (const fault of [...o.faults].sort((a, b) => a.atMs - b.atMs)) {
      await sleep(Math.max(0, fault.atMs - (Date.now() - t0)));
      mark(`${fault.name} ...`);
      await fault.run();
      mark(`${fault.name} done`);
    }
    await sleep(Math.max(0, o.durationMs - (Date.now() - t0)));
    publishing = false;
    await Promise.all(publisherLoops);
    mark(`publishing stopped: ${sent[1].length} QoS 1 + ${sent[2].length} QoS 2 sent, ${outstanding} awaiting their ack`);

    const missing = () => {
      let n = 0;
      for (const qos of [1, 2] as const) for (const p of acked[qos]) for (const s of subs) if (!s.got.has(p)) n++;
      return n;
    };
    const settled = await settle(
      {
        outstanding: () => outstanding,
        missing,
        lastAckMs: () => lastAckMs,
        close: () => {
          auditing = false;
        },
      },
      o.settleMs ?? 10000,
    );
    mark(`settled: ${outstanding} publishes never acknowledged, ${missing()} acknowledged deliveries missing (acknowledgements audited until t+${settled.closedAtMs - t0} ms, ${lateAcks} after that)`);

    const byQos = ([1, 2] as const).map((qos): QosAudit => {
      const lost: string[] = [];
      let duplicates = 0;
      const duplicated: string[] = [];
      let unacknowledgedDelivered = 0;
      const prefix = `aud-pub-q${qos}-`;
      for (const s of subs) {
        for (const p of acked[qos]) if (!s.got.has(p)) lost.push(`${s.name} ${p}`);
        for (const [p, n] of s.got) {
          if (!p.startsWith(prefix)) continue;
          duplicates += n - 1;
          for (let k = 1; k < n; k++) duplicated.push(`${s.name} ${p}`);
          if (!acked[qos].has(p)) unacknowledgedDelivered++;
        }
      }
      return { qos, published: sent[qos].length, acknowledged: acked[qos].size, lost, duplicates, duplicated, unacknowledgedDelivered };
    });
    return { byQos, timeline };
  } finally {
    publishing = false;
    await Promise.all(clients.map((c) => c.endAsync(true).catch(() => undefined)));
  }
}

/** The one-line summary the brief asks for, per QoS. */
export function auditLine(a: QosAudit): string {
  return `# audit QoS ${a.qos}: published ${a.published}, acknowledged ${a.acknowledged}, lost ${a.lost.length}, duplicates ${a.duplicates} (delivered without ack ${a.unacknowledgedDelivered})`;
}

/** Lost (or duplicated) deliveries as seq ranges per subscriber and publisher: "aud-sub-0 <- aud-pub-q1-0: 89-104, 400-410". */
export function lossRanges(lost: readonly string[]): string[] {
  const by = new Map<string, number[]>();
  for (const entry of lost) {
    const [sub, payload] = entry.split(' ');
    const at = payload.lastIndexOf(':');
    const key = `${sub} <- ${payload.slice(0, at)}`;
    let list = by.get(key);
    if (!list) by.set(key, (list = []));
    list.push(Number(payload.slice(at + 1)));
  }
  return [...by].sort(([a], [b]) => a.localeCompare(b)).map(([key, seqs]) => {
    seqs.sort((x, y) => x - y);
    const ranges: string[] = [];
    for (let i = 0; i < seqs.length; ) {
      let j = i;
      while (j + 1 < seqs.length && seqs[j + 1] === seqs[j] + 1) j++;
      ranges.push(i === j ? `${seqs[i]}` : `${seqs[i]}-${seqs[j]}`);
      i = j + 1;
    }
    return `${key}: ${ranges.join(', ')}`;
  });
}
