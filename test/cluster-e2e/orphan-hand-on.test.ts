// A dead node's undelivered message for a client that has moved on is handed on until the
// client's new node stores it, also when that node's bus stream is missing at the reaping (it
// is rejoining, or Redis failed over). Three Vigil processes on one real Redis: the subscriber
// C is on node X; X is frozen (SIGSTOP) with a QoS 1 message for C in its bus stream; C
// reconnects to node Y (its session moves there); Y is frozen too and its stream deleted; X's
// lease lapses and node R reaps it, finds C moved to Y, and its forward finds no stream.
// Before, that message was dropped without a word. Y comes back (long node timeout: not
// reaped meanwhile), makes its stream again, and C gets the message once.
// (X's SIGKILL while frozen: its lease lapses 4 s after its last renewal, then R reaps it.)
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { busStreamKey, startNode, untilRouted, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { ClientPool } from '../helpers/mqtt.js';

let redis: TestRedis;
let r: VigilNode;
let x: VigilNode;
let y: VigilNode;
let prefix: string;
const frozen = new Set<number>();
const clients = new ClientPool();

function freeze(n: VigilNode): void {
  process.kill(n.pid, 'SIGSTOP');
  frozen.add(n.pid);
}
function thaw(n: VigilNode): void {
  process.kill(n.pid, 'SIGCONT');
  frozen.delete(n.pid);
}

before(async () => {
  redis = await startRedis();
  prefix = randomPrefix('oh');
  // X's lease outlasts the steps between freezing X and freezing Y (R must not reap X before);
  // Y's outlasts Y's freeze (nobody may reap Y)
  [r, x, y] = await Promise.all([
    startNode({ redisUrl: redis.url, prefix, nodeId: 'r' }),
    startNode({ redisUrl: redis.url, prefix, nodeId: 'x', env: { VIGIL_NODE_TIMEOUT_MS: '4000', VIGIL_HEARTBEAT_MS: '500' } }),
    startNode({ redisUrl: redis.url, prefix, nodeId: 'y', env: { VIGIL_NODE_TIMEOUT_MS: '30000', VIGIL_HEARTBEAT_MS: '1000' } }),
  ]);
  await waitUntil(async () => (await r.ready()) && (await x.ready()) && (await y.ready()), 10_000, 'nodes ready');
});
after(async () => {
  for (const pid of frozen) process.kill(pid, 'SIGCONT');
  await clients.closeAll();
  await Promise.all([r?.stop(), x?.kill('SIGKILL'), y?.stop()]);
  await redis?.stop();
});

describe("a dead node's message for a client that moved", () => {
  test("is handed on until the client's new node stores it, also when that node's stream is missing at the reaping", async () => {
    const session = { clientId: 'oh-c', protocolVersion: 5 as const, clean: false, properties: { sessionExpiryInterval: 600 } };
    const onX = await clients.connect(x.url, session);
    await onX.mqtt.subscribeAsync('oh/c', { qos: 1 });
    const publisher = await clients.connect(r.url, { clientId: 'oh-pub', protocolVersion: 5 });
    await untilRouted(publisher, onX, 'oh/c', 'node R routes to C on node X');

    // X frozen: the message for C waits in X's bus stream
    freeze(x);
    await publisher.mqtt.publishAsync('oh/c', 'only-in-x', { qos: 1 });
    onX.mqtt.stream.destroy();
    // C moves to Y (the session is claimed there; X, frozen, handles nothing)
    const onY = await clients.connect(y.url, session, 10_000);
    assert.equal(onY.connack.sessionPresent, true, 'the session moved to Y');

    // Y frozen with its stream gone: R's forward of X's leftovers to C's node finds no stream
    const redisClient = redis.client();
    const busKey = await busStreamKey(redisClient, prefix, 'y');
    freeze(y);
    assert.equal(await redisClient.del(busKey), 1, "node Y's bus stream deleted");
    await x.kill('SIGKILL');
    frozen.delete(x.pid);
    const handedOn = () => r.logs.find((l) => l.msg === 'undelivered messages of a dead node handed on');
    await waitUntil(() => handedOn() !== undefined, 20_000, "R reaped X and handed on X's leftovers");

    thaw(y);
    await waitUntil(() => onY.messages.some((m) => m.payload === 'only-in-x'), 20_000, 'the message at C on Y');
    assert.ok(Number(handedOn()!.retrying) > 0, "R's first forward to Y stored nothing (the case under test)");
    await publisher.mqtt.publishAsync('oh/c', 'after', { qos: 1 });
    await waitUntil(() => onY.messages.some((m) => m.payload === 'after'), 10_000, 'a later message at C');
    assert.equal(onY.messages.filter((m) => m.payload === 'only-in-x').length, 1, 'once');
    assert.ok(!r.logs.some((l) => l.msg === 'undelivered message of a dead node could not be handed on; dropped'));
    redisClient.disconnect();
  });
});
