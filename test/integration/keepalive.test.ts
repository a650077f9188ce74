// Keep alive [MQTT-3.1.2-24] over real sockets: no packet for 1.5 × the keep alive closes the
// connection (MQTT 5: DISCONNECT 0x8D); a keep alive above maxKeepaliveS gets Server Keep
// Alive in 5.0 [MQTT-3.2.2-21] and is refused in 3.1.1. The timing rules themselves (not
// before 1.5 ×, PINGREQ keeps it open, 0 turns it off, for both versions) are decided on a
// fake clock in test/unit/channel-timers.test.ts; here only what a loaded machine cannot
// make wrong is asserted: the close comes, and never early.
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
          const d = (await client.next('disconnect', 20_000)) as IDisconnectPacket;
          assert.equal(d.reasonCode, 0x8d);
        }
        await client.waitForClose(20_000);
        const elapsed = Date.now() - start;
        assert.ok(elapsed >= 1400, `closed after ${elapsed} ms, before 1.5 s`);
      });

      it('PINGREQ gets PINGRESP', async () => {
        const { client } = await RawClient.connect(broker.port, v, { clientId: uniqueId(), keepalive: 2 });
        raws.push(client);
        client.send({ cmd: 'pingreq' });
        await client.next('pingresp', 20_000);
        assert.equal(client.closed, false);
      });
    });
  }

  it('MQTT 5.0: a keep alive above the maximum gets Server Keep Alive, which is enforced', async () => {
    const { client, connack } = await RawClient.connect(broker.port, 5, { clientId: uniqueId(), keepalive: 60 });
    raws.push(client);
    assert.equal(connack.properties?.serverKeepAlive, 2);
    const start = Date.now();
    await client.waitForClose(20_000);
    assert.ok(Date.now() - start >= 2900, 'enforced at 1.5 × the server keep alive, not before');
  });

  it('MQTT 5.0: mqtt.js follows Server Keep Alive and stays connected', async () => {
    const c = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId(), keepalive: 30 });
    assert.equal(c.connack.properties?.serverKeepAlive, 2);
    // it pings at the server's 2 s, not its own 30 s: two answered pings, still connected
    let pongs = 0;
    c.mqtt.on('packetreceive', (p) => void (p.cmd === 'pingresp' && pongs++));
    const deadline = Date.now() + 20_000;
    while (pongs < 2 && Date.now() < deadline && c.mqtt.connected) await sleep(50);
    assert.equal(pongs >= 2, true, `${pongs} PINGRESPs`);
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
