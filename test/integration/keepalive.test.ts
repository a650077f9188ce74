// Keep alive [MQTT-3.1.2-24]: no packet for 1.5 × the keep alive closes the connection (MQTT 5:
// DISCONNECT 0x8D); PINGREQ keeps it open; a keep alive above maxKeepaliveS gets Server Keep
// Alive in 5.0 [MQTT-3.2.2-21] and is refused in 3.1.1.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { IConnackPacket, IDisconnectPacket } from 'mqtt-packet';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, sleep, uniqueId, VERSIONS, versionName } from '../helpers/mqtt.js';
import { RawClient } from '../helpers/raw-client.js';

describe('keep alive', { timeout: 30000, concurrency: true }, () => {
  let broker: TestBroker;
  const pool = new ClientPool();
  const raws: RawClient[] = [];
  before(async () => (broker = await startBroker({ maxKeepaliveS: 2 })));
  // the tests wait on timers, so they run concurrently and clean up together
  after(async () => {
    await pool.closeAll();
    for (const r of raws.splice(0)) r.close();
    await broker.close();
  });

  for (const v of VERSIONS) {
    describe(versionName(v), { concurrency: true }, () => {
      it('a silent client is closed after 1.5 × keep alive, not before', async () => {
        const { client } = await RawClient.connect(broker.port, v, { clientId: uniqueId(), keepalive: 1 });
        raws.push(client);
        const start = Date.now();
        if (v === 5) {
          const d = (await client.next('disconnect', 4000)) as IDisconnectPacket;
          assert.equal(d.reasonCode, 0x8d);
        }
        await client.waitForClose(4000);
        const elapsed = Date.now() - start;
        assert.ok(elapsed >= 1400, `closed after ${elapsed} ms, before 1.5 s`);
        assert.ok(elapsed <= 3000, `closed after ${elapsed} ms`);
      });

      it('PINGREQ keeps the connection open and gets PINGRESP', async () => {
        const { client } = await RawClient.connect(broker.port, v, { clientId: uniqueId(), keepalive: 1 });
        raws.push(client);
        for (let i = 0; i < 4; i++) {
          await sleep(700);
          client.send({ cmd: 'pingreq' });
          await client.next('pingresp');
        }
        assert.equal(client.closed, false);
      });

      it('keep alive 0 turns the mechanism off', async () => {
        // maxKeepaliveS < 65535 makes a 5.0 server impose one; 3.1.1 stays without
        if (v === 5) return;
        const { client } = await RawClient.connect(broker.port, v, { clientId: uniqueId(), keepalive: 0 });
        raws.push(client);
        await sleep(2500);
        assert.equal(client.closed, false);
      });
    });
  }

  it('MQTT 5.0: a keep alive above the maximum gets Server Keep Alive, which is enforced', async () => {
    const { client, connack } = await RawClient.connect(broker.port, 5, { clientId: uniqueId(), keepalive: 60 });
    raws.push(client);
    assert.equal(connack.properties?.serverKeepAlive, 2);
    const start = Date.now();
    await client.waitForClose(5000);
    assert.ok(Date.now() - start >= 2900, 'enforced at 1.5 × the server keep alive');
  });

  it('MQTT 5.0: mqtt.js follows Server Keep Alive and stays connected', async () => {
    const c = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId(), keepalive: 30 });
    assert.equal(c.connack.properties?.serverKeepAlive, 2);
    await sleep(3500);
    assert.equal(c.mqtt.connected, true);
  });

  it('MQTT 3.1.1: a keep alive above the maximum is refused', async () => {
    const client = await RawClient.open(broker.port, 4);
    raws.push(client);
    client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: uniqueId(), keepalive: 60 });
    const connack = (await client.next('connack')) as IConnackPacket;
    assert.notEqual(connack.returnCode, 0);
    await client.waitForClose();
  });
});
