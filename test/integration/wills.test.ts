// Wills [MQTT-3.1.2-8..10, MQTT-3.14.4-3]: published when the connection ends without a normal
// DISCONNECT or with DISCONNECT 0x04, not after DISCONNECT 0x00; MQTT 5 Will Delay Interval:
// a reconnect within the delay cancels it, and it goes at the earlier of delay end and session end.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, sleep, uniqueId, VERSIONS, versionName, type TestClient } from '../helpers/mqtt.js';
import { RawClient } from '../helpers/raw-client.js';

/** Polls a condition on the in-process broker (generous deadline: the machine may be loaded). */
async function waitFor(cond: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

describe('wills', { timeout: 30000, concurrency: true }, () => {
  let broker: TestBroker;
  const pool = new ClientPool();
  const raws: RawClient[] = [];
  before(async () => {
    broker = await startBroker();
  });
  // the tests wait on timers, so they run concurrently and clean up together
  after(async () => {
    await pool.closeAll();
    for (const r of raws.splice(0)) r.close();
    await broker.close();
  });

  async function watch(topic: string): Promise<TestClient> {
    const watcher = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId('watch') });
    await watcher.mqtt.subscribeAsync(topic, { qos: 1 });
    return watcher;
  }

  for (const v of VERSIONS) {
    describe(versionName(v), { concurrency: true }, () => {
      it('a connection lost without DISCONNECT publishes the will', async () => {
        const w = await watch(`will/${v}/lost`);
        const { client } = await RawClient.connect(broker.port, v, { clientId: uniqueId(), will: { topic: `will/${v}/lost`, payload: Buffer.from('gone'), qos: 1, retain: false } });
        raws.push(client);
        client.close();
        const [m] = await w.waitForMessages(1);
        assert.equal(m.payload, 'gone');
      });

      it('a normal DISCONNECT discards the will', async () => {
        const w = await watch(`will/${v}/normal`);
        const c = await pool.connect(broker.url, { protocolVersion: v, clientId: uniqueId(), will: { topic: `will/${v}/normal`, payload: 'no', qos: 1, retain: false } });
        await c.mqtt.endAsync();
        await sleep(300);
        assert.deepEqual(w.messages, []);
      });

      it('a retained will is stored as retained', async () => {
        const { client } = await RawClient.connect(broker.port, v, { clientId: uniqueId(), will: { topic: `will/${v}/retained`, payload: Buffer.from('kept'), qos: 1, retain: true } });
        raws.push(client);
        client.close();
        await client.waitForClose();
        await sleep(100);
        const w = await watch(`will/${v}/retained`);
        const [m] = await w.waitForMessages(1);
        assert.equal(m.payload, 'kept');
        assert.equal(m.packet.retain, true);
      });

      it('a protocol error closes the connection and publishes the will', async () => {
        const w = await watch(`will/${v}/error`);
        const { client } = await RawClient.connect(broker.port, v, { clientId: uniqueId(), will: { topic: `will/${v}/error`, payload: Buffer.from('err'), qos: 0, retain: false } });
        raws.push(client);
        client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: v, clean: true, clientId: 'x', keepalive: 0 });
        const [m] = await w.waitForMessages(1);
        assert.equal(m.payload, 'err');
      });
    });
  }

  describe('MQTT 5.0', { concurrency: true }, () => {
    const willConnect = (clientId: string, topic: string, delayS: number, expiryS: number) =>
      RawClient.connect(broker.port, 5, {
        clientId,
        clean: false,
        properties: { sessionExpiryInterval: expiryS },
        will: { topic, payload: Buffer.from('delayed'), qos: 1, retain: false, properties: { willDelayInterval: delayS } },
      });

    // only 0x00 discards the will; 0x04 asks for it and any other reason (an error) keeps it [MQTT-3.1.2-10, MQTT-3.14.4-3]
    for (const [reasonCode, published] of [[0x00, false], [0x04, true], [0x80, true], [0x83, true]] as const) {
      it(`DISCONNECT 0x${reasonCode.toString(16).padStart(2, '0')} ${published ? 'publishes' : 'discards'} the will`, async () => {
        const topic = `will/5/rc${reasonCode}`;
        const w = await watch(topic);
        const c = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId(), will: { topic, payload: 'asked for', qos: 1, retain: false } });
        await c.mqtt.endAsync(false, { reasonCode });
        if (published) {
          const [m] = await w.waitForMessages(1);
          assert.equal(m.payload, 'asked for');
        } else {
          // a marker published after the DISCONNECT arrives behind any will the broker would have sent
          const marker = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });
          await marker.mqtt.publishAsync(topic, 'marker', { qos: 1 });
          const [m] = await w.waitForMessages(1);
          assert.equal(m.payload, 'marker');
          await sleep(300);
          assert.equal(w.messages.length, 1, 'no will after the marker either');
        }
      });
    }

    it('the will waits for its delay', async () => {
      const w = await watch('will/5/delay');
      const { client } = await willConnect(uniqueId(), 'will/5/delay', 1, 60);
      raws.push(client);
      const lostAt = Date.now();
      client.close();
      await sleep(600);
      assert.equal(w.messages.length, 0, 'not before the delay');
      await w.waitForMessages(1, 2000);
      assert.ok(Date.now() - lostAt >= 950, 'published after about a second');
    });

    it('a reconnect within the will delay cancels the will', async () => {
      const w = await watch('will/5/cancel');
      const id = uniqueId();
      // a delay no loaded machine outlasts between the close and the reconnect
      const first = await willConnect(id, 'will/5/cancel', 60, 120);
      raws.push(first.client);
      first.client.close();
      await first.client.waitForClose();
      const wills = broker.server.broker.wills;
      await waitFor(() => wills.pendingFor(id) !== undefined, 'the will scheduled');
      const again = await RawClient.connect(broker.port, 5, { clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } });
      raws.push(again.client);
      assert.equal(again.connack.sessionPresent, true);
      assert.equal(wills.pendingFor(id), undefined, 'cancelled by the reconnect, not merely not yet due'); // [MQTT-3.1.3-9]
      assert.deepEqual(w.messages, []);
    });

    it('the will goes when the session ends, if that comes before the delay', async () => {
      const w = await watch('will/5/session-end');
      const { client } = await willConnect(uniqueId(), 'will/5/session-end', 30, 1);
      raws.push(client);
      client.close();
      const [m] = await w.waitForMessages(1, 2500);
      assert.equal(m.payload, 'delayed');
    });

    it('a clean start by the same client id ends the session and publishes a pending will', async () => {
      const w = await watch('will/5/clean');
      const id = uniqueId();
      const { client } = await willConnect(id, 'will/5/clean', 30, 60);
      raws.push(client);
      client.close();
      await client.waitForClose();
      await waitFor(() => broker.server.broker.wills.pendingFor(id) !== undefined, 'the will scheduled');
      assert.equal(w.messages.length, 0);
      await pool.connect(broker.url, { protocolVersion: 5, clientId: id, clean: true });
      await w.waitForMessages(1, 20_000);
    });
  });
});
