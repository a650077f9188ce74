// Session queues are bounded in bytes (issue 12, problem 7): one identity opens four client
// ids with persistent sessions, goes offline and is sent 100 distinct 1 MiB QoS 1 messages.
// Without byte limits that held 4 × 100 MiB forever. Now each session keeps at most
// VIGIL_MAX_QUEUED_BYTES and all together at most VIGIL_QUEUED_BYTES_BUDGET, the overflow
// policy (drop-oldest here) decides what goes, and the subscriber gets the newest on resume.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestBroker } from '../helpers/broker.js';
import { jwtBrokerFixture } from '../helpers/jwt-broker.js';
import { waitFor, uniqueId, type Version } from '../helpers/mqtt.js';
import type { Config } from '../../src/config.js';

const MIB = 1024 * 1024;
const MESSAGES = 100;
const TOPIC = 'bulk/data';
const SESSIONS: readonly Version[] = [4, 5, 4, 5];

const fixture = jwtBrokerFixture();
const clients = fixture.clients;

/** Four offline sessions of one identity, 100 × 1 MiB published to them; returns what each holds. */
async function flood(overrides: Partial<Config>): Promise<{ b: TestBroker; ids: string[]; password: Buffer }> {
  const b = await fixture.start({ roles: { fleet: { publish: ['bulk/#'], subscribe: ['bulk/#'] } } }, { maxPacketSize: 2 * MIB, ...overrides });
  const password = await fixture.password('fleet', ['fleet']);
  const ids: string[] = [];
  for (const version of SESSIONS) {
    const clientId = uniqueId(`away-v${version}`);
    const c = await clients.connect(b.url, { protocolVersion: version, clientId, username: '', password, clean: false, ...(version === 5 ? { properties: { sessionExpiryInterval: 3600 } } : {}) });
    await c.mqtt.subscribeAsync(TOPIC, { qos: 1 });
    await c.mqtt.endAsync();
    ids.push(clientId);
  }
  const publisher = await clients.connect(b.url, { protocolVersion: 5, clientId: uniqueId('pub'), username: '', password });
  for (let i = 0; i < MESSAGES; i++) {
    const payload = Buffer.alloc(MIB, i % 251);
    payload.writeUInt32BE(i, 0);
    await publisher.mqtt.publishAsync(TOPIC, payload, { qos: 1 });
  }
  await publisher.mqtt.endAsync();
  return { b, ids, password };
}

function held(b: TestBroker, ids: string[]): { count: number; bytes: number }[] {
  return ids.map((id) => {
    const s = b.server.broker.sessions.get(id)!;
    return { count: s.queued, bytes: s.queuedBytes };
  });
}

/** Resumes each session and checks it gets exactly what was held: the newest, in order. */
async function resumeAll(b: TestBroker, ids: string[], password: Buffer, counts: number[]): Promise<void> {
  for (let k = 0; k < ids.length; k++) {
    const version = SESSIONS[k];
    const c = await clients.connect(b.url, { protocolVersion: version, clientId: ids[k], username: '', password, clean: false, ...(version === 5 ? { properties: { sessionExpiryInterval: 3600 } } : {}) });
    assert.equal(c.connack.sessionPresent, true);
    const got = await c.waitForMessages(counts[k], 30_000);
    const seq = got.map((m) => (m.packet.payload as Buffer).readUInt32BE(0));
    assert.deepEqual(seq, Array.from({ length: counts[k] }, (_, i) => MESSAGES - counts[k] + i), `session ${k} (v${version}) gets the newest, in order`);
    await c.mqtt.endAsync();
  }
}

describe('session queues are bounded in bytes', () => {
  test('defaults: each offline session keeps at most VIGIL_MAX_QUEUED_BYTES (16 MiB) of 100 MiB sent to it', async () => {
    const { b, ids, password } = await flood({});
    const config = b.server.config;
    assert.equal(config.maxQueuedBytes, 16 * MIB);
    const h = held(b, ids);
    for (const { bytes, count } of h) {
      assert.ok(bytes <= config.maxQueuedBytes, `${bytes} B held`);
      assert.ok(count >= 15 && count < MESSAGES, `${count} messages held`);
    }
    await waitFor(async () => (await b.metric('vigil_queued_bytes')) === h.reduce((n, x) => n + x.bytes, 0), 10_000, 'vigil_queued_bytes recounted');
    assert.ok((await b.metric('vigil_queued_bytes')) <= config.queuedBytesBudget);
    assert.equal(await b.metric('vigil_messages_dropped_total', { reason: 'queue_bytes_full' }), h.reduce((n, x) => n + MESSAGES - x.count, 0));
    await resumeAll(b, ids, password, h.map((x) => x.count));
    await waitFor(async () => (await b.metric('vigil_queued_bytes')) === 0, 10_000, 'queues empty after resume');
  });

  test('the node-wide budget binds when the sessions together would hold more', async () => {
    const budget = 100 * MIB;
    const { b, ids, password } = await flood({ maxQueuedBytes: 64 * MIB, queuedBytesBudget: budget });
    const h = held(b, ids);
    const total = h.reduce((n, x) => n + x.bytes, 0);
    assert.ok(total <= budget, `${total} B held in all, budget ${budget}`);
    assert.ok(total > budget - 4 * (MIB + TOPIC.length), 'the budget is used, not refused early');
    for (const { bytes } of h) assert.ok(bytes <= 64 * MIB);
    assert.ok((await b.metric('vigil_messages_dropped_total', { reason: 'queue_budget_full' })) > 0);
    await waitFor(async () => (await b.metric('vigil_queued_bytes')) === total, 10_000, 'vigil_queued_bytes recounted');
    await resumeAll(b, ids, password, h.map((x) => x.count));
  });

  test('VIGIL_QUEUE_OVERFLOW=drop-new keeps the oldest that fit and counts the rest', async () => {
    const { b, ids } = await flood({ maxQueuedBytes: 8 * MIB, queueOverflow: 'drop-new' });
    for (const id of ids) {
      const pending = b.server.broker.sessions.get(id)!.pendingMessages();
      assert.deepEqual(pending.map((p) => p.message.payload.readUInt32BE(0)), [0, 1, 2, 3, 4, 5, 6], 'the first seven 1 MiB messages fit in 8 MiB');
    }
    assert.equal(await b.metric('vigil_messages_dropped_total', { reason: 'queue_bytes_full' }), 4 * (MESSAGES - 7));
  });
});
