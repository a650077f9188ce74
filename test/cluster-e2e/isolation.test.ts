// An isolated node: node A reaches Redis only through a TCP proxy in this test, node B
// directly. The proxy is cut (a black hole: connections stay open, nothing is forwarded) while
// clients still reach A. A must give up its clients (disconnect them, /readyz false) before B
// reaps A after the node timeout; the will of A's client fires exactly once, and the client
// id is never owned by two nodes at once. The timeline is printed as `# t+… ms: …`.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { startNode, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { ClientPool, sleep } from '../helpers/mqtt.js';
import { ClusterKeys } from '../../src/cluster/keys.js';

const NODE_TIMEOUT_MS = 1500;

/** A loopback TCP proxy to Redis that can be cut (black hole) and healed. */
class RedisProxy {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  forwarding = true;
  port = 0;

  constructor(private readonly target: number) {
    this.server = net.createServer((client) => {
      const upstream = net.connect({ host: '127.0.0.1', port: this.target });
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('error', () => undefined);
        s.on('close', () => {
          this.sockets.delete(s);
          client.destroy();
          upstream.destroy();
        });
      }
      client.on('data', (d) => this.forwarding && upstream.write(d));
      upstream.on('data', (d) => this.forwarding && client.write(d));
    });
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  /** Nothing passes any more, in either direction; connections stay open (a partition, not a reset). */
  cut(): void {
    this.forwarding = false;
  }

  /** Forwarding again; connections that lived through the cut are dropped so clients reconnect cleanly. */
  heal(): void {
    for (const s of this.sockets) s.destroy();
    this.forwarding = true;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

let redis: TestRedis;
let proxy: RedisProxy;
let a: VigilNode;
let b: VigilNode;
let keys: ClusterKeys;
const clients = new ClientPool();

before(async () => {
  redis = await startRedis();
  proxy = new RedisProxy(redis.port);
  await proxy.start();
  const prefix = randomPrefix('iso');
  keys = new ClusterKeys(prefix);
  [a, b] = await Promise.all([
    startNode({ redisUrl: `redis://127.0.0.1:${proxy.port}`, prefix, nodeId: 'a' }),
    startNode({ redisUrl: redis.url, prefix, nodeId: 'b' }),
  ]);
  await waitUntil(async () => (await a.ready()) && (await b.ready()), 5000, 'nodes ready');
});
after(async () => {
  await clients.closeAll();
  await Promise.all([a?.kill('SIGKILL'), b?.stop()]);
  await proxy?.stop();
  await redis?.stop();
});

describe('a node cut off from Redis', { timeout: 40_000 }, () => {
  test('gives up its clients before another node reaps it; the will fires once; no client id is owned twice', async () => {
    const probe = redis.client();
    const t0 = Date.now();
    const timeline: { at: number; what: string }[] = [];
    const mark = (what: string, at = Date.now()) => timeline.push({ at, what });

    const wills: number[] = [];
    const observer = await clients.connect(b.url, { protocolVersion: 5, clientId: 'iso-observer' });
    observer.mqtt.on('message', (topic) => {
      if (topic === 'iso/will/C') {
        wills.push(Date.now());
        mark('observer on B got the will of C');
      }
    });
    await observer.mqtt.subscribeAsync('iso/will/#', { qos: 1 });

    const will = { topic: 'iso/will/C', payload: Buffer.from('down'), qos: 1 as const, retain: false, properties: { willDelayInterval: 0 } };
    const c = await clients.connect(a.url, { protocolVersion: 5, clientId: 'C', clean: false, properties: { sessionExpiryInterval: 60 }, will });
    const ownerBefore = await probe.hgetall(keys.clientOwner('C'));
    mark(`C connected on A (owner ${ownerBefore.node}, epoch ${ownerBefore.epoch})`);
    let cClosedAt = 0;
    c.mqtt.on('close', () => {
      if (!cClosedAt) mark('C disconnected by A', (cClosedAt = Date.now()));
    });
    let disconnectReason: number | undefined;
    c.mqtt.on('disconnect', (p) => (disconnectReason = p.reasonCode));

    // watch A's readiness while the partition lasts
    let notReadyAt = 0;
    let watching = true;
    const readiness = (async () => {
      while (watching) {
        if (!notReadyAt && !(await a.ready())) mark('A /readyz false', (notReadyAt = Date.now()));
        await sleep(20);
      }
    })();

    const cutAt = Date.now();
    proxy.cut();
    mark('proxy cut: A cannot reach Redis, B and the clients still reach A');

    const reapedLog = () => b.logs.find((l) => l.msg === 'dead node reaped');
    await waitUntil(() => !!reapedLog(), NODE_TIMEOUT_MS + 5000, 'B to reap A');
    const reapStart = b.logs.find((l) => l.msg === 'reaping dead node');
    const reapedAt = Number((reapStart ?? reapedLog())!.time);
    mark(`B reaps A (${String(reapedLog()!.clients)} client(s) orphaned)`, reapedAt);
    const fenceLog = a.logs.find((l) => l.msg === 'cluster ownership lost, closing every connection');
    assert.ok(fenceLog, 'A logged that it gave up ownership');
    const fencedAt = Number(fenceLog.time);
    mark(`A gives up ownership (${String(fenceLog.reason)}), closing every connection`, fencedAt);

    // a CONNECT to A during the partition is refused
    const refused = await clients.connectRefused(a.url, { protocolVersion: 5, clientId: 'iso-late' });
    mark(`CONNECT to A refused (${refused.code ?? refused.message})`);

    await waitUntil(() => wills.length > 0, 3000, 'the will of C');
    // C reconnects, to B: one owner again
    const back = await clients.connect(b.url, { protocolVersion: 5, clientId: 'C', clean: false, properties: { sessionExpiryInterval: 60 } });
    const ownerAfter = await probe.hgetall(keys.clientOwner('C'));
    mark(`C reconnected on B (owner ${ownerAfter.node}, epoch ${ownerAfter.epoch}, session present ${back.connack.sessionPresent})`);

    // heal: A comes back as a new member and must not act for C (no second will, no kick of B's C)
    proxy.heal();
    mark('proxy healed');
    await waitUntil(() => a.ready(), 8000, 'A ready again');
    mark('A /readyz true again (rejoined as a new member)');
    await sleep(1000);
    watching = false;
    await readiness;

    for (const e of timeline.sort((x, y) => x.at - y.at)) process.stdout.write(`# t+${String(e.at - t0).padStart(5)} ms: ${e.what}\n`);
    process.stdout.write(`# A fenced ${fencedAt - cutAt} ms after the cut, B reaped ${reapedAt - cutAt} ms after the cut (node timeout ${NODE_TIMEOUT_MS} ms)\n`);

    assert.ok(fencedAt < reapedAt, `A gave up ownership (${fencedAt - cutAt} ms) before B reaped it (${reapedAt - cutAt} ms)`);
    assert.ok(cClosedAt > 0 && cClosedAt <= reapedAt, `C was disconnected by A (${cClosedAt - cutAt} ms) before B reaped A (${reapedAt - cutAt} ms)`);
    assert.ok(notReadyAt > 0 && notReadyAt <= reapedAt + 50, `A reported not ready (${notReadyAt - cutAt} ms) by the time it was reaped`);
    assert.equal(disconnectReason, 0x89, 'C was told Server Busy');
    assert.equal(wills.length, 1, 'the will fired exactly once');
    assert.ok(wills[0] >= reapedAt, 'the will fired by the reaper, after the reap');
    assert.ok(Number(ownerAfter.epoch) > Number(ownerBefore.epoch), 'a newer incarnation owns C');
    assert.equal(ownerAfter.node, (await probe.hgetall(keys.clientOwner('C'))).node, 'C still owned by B after A rejoined');
    assert.ok(String(ownerAfter.node).startsWith('b/'));
    assert.equal(back.mqtt.connected, true, 'C on B was not kicked by the rejoined A');
    probe.disconnect();
  });
});
