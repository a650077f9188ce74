// Graceful stop (what SIGTERM runs): MQTT 5 clients get DISCONNECT 0x8B, every connection is
// closed, new connections are refused, pending wills are published, and stop() resolves.
import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startBroker } from '../helpers/broker.js';
import { ClientPool, uniqueId, withTimeout } from '../helpers/mqtt.js';
import { RawClient } from '../helpers/raw-client.js';

describe('shutdown', { timeout: 20000 }, () => {
  const pool = new ClientPool();
  afterEach(() => pool.closeAll());

  it('MQTT 5.0 clients get DISCONNECT 0x8B, 3.1.1 clients are closed, stop() resolves', async () => {
    const broker = await startBroker({ shutdownGraceMs: 1000 });
    const v5 = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });
    const v4 = await pool.connect(broker.url, { protocolVersion: 4, clientId: uniqueId() });
    const disconnect = v5.waitForDisconnect();
    const closed = [v5.waitForClose(), v4.waitForClose()];
    const start = Date.now();
    await withTimeout(broker.close(), 3000, 'stop()');
    assert.equal((await disconnect).reasonCode, 0x8b);
    await Promise.all(closed);
    assert.ok(Date.now() - start < 1000, 'clients that close promptly do not hold up the stop');
    // the listener is gone
    const refused = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port: broker.port });
      s.once('connect', () => {
        s.destroy();
        resolve(false);
      });
      s.once('error', () => resolve(true));
    });
    assert.equal(refused, true);
  });

  it('a client that never reads does not keep stop() waiting past the grace period', async () => {
    const broker = await startBroker({ shutdownGraceMs: 300 });
    const { client } = await RawClient.connect(broker.port, 5, { clientId: uniqueId() });
    client.socket.pause();
    const start = Date.now();
    await withTimeout(broker.close(), 3000, 'stop()');
    assert.ok(Date.now() - start < 2500);
    client.close();
  });

  it('pending delayed wills are published before the node stops', async () => {
    const broker = await startBroker();
    const watcher = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });
    await watcher.mqtt.subscribeAsync('bye/#', { qos: 0 });
    const { client } = await RawClient.connect(broker.port, 5, {
      clientId: uniqueId(),
      properties: { sessionExpiryInterval: 60 },
      will: { topic: 'bye/will', payload: Buffer.from('flushed'), qos: 0, retain: false, properties: { willDelayInterval: 60 } },
    });
    client.close();
    await client.waitForClose();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(watcher.messages.length, 0);
    const received = watcher.waitForMessages(1, 3000);
    await broker.server.broker.wills.flushAll(); // what stop() does after the sockets are gone
    assert.equal((await received)[0].payload, 'flushed');
    await broker.close();
  });
});
