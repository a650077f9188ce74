// After a client's DISCONNECT the server closes the connection (§3.14.4) owing the client
// nothing: over plain TCP it closes the socket at once instead of shutting down its side and
// waiting for the client's FIN (transport/connection.ts, endOwingNothing). What was written
// before still arrives, and the close is a FIN, not a reset.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import mqttPacket from 'mqtt-packet';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { waitFor } from '../helpers/mqtt.js';
import { lingeringStreams } from '../../src/transport/connection.js';

const CONNACK_ACCEPTED = [0x20, 0x02, 0x00, 0x00];
const DISCONNECT = Buffer.from([0xe0, 0x00]);

/** A client socket that never sends its own FIN (allowHalfOpen): only the server can end the connection. */
function halfOpenClient(port: number): Promise<{ socket: net.Socket; bytes: number[]; errors: Error[]; ended: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const bytes: number[] = [];
    const errors: Error[] = [];
    socket.on('data', (chunk: Buffer) => bytes.push(...chunk));
    socket.on('error', (err) => errors.push(err));
    const ended = new Promise<void>((done, failed) => {
      socket.once('end', () => done());
      socket.once('close', () => failed(new Error(`closed without the server's FIN (${errors.map((e) => e.message).join(', ') || 'no error'})`)));
    });
    ended.catch(() => undefined);
    socket.once('connect', () => resolve({ socket, bytes, errors, ended }));
    socket.once('error', reject);
  });
}

function connectBytes(clientId: string): Buffer {
  return mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId, keepalive: 0 });
}

const until = (what: string, cond: () => boolean | Promise<boolean>) => waitFor(cond, 20000, what);

describe('the server closes after a client DISCONNECT', { timeout: 30000 }, () => {
  let broker: TestBroker;
  before(async () => {
    broker = await startBroker();
  });
  after(async () => {
    await broker.close();
  });

  it('closes a TCP socket at once, not waiting for the client to end its side, with a FIN', async () => {
    const lingeringBefore = lingeringStreams();
    const c = await halfOpenClient(broker.port);
    try {
      c.socket.write(connectBytes('close-at-once'));
      await until('the CONNACK', () => c.bytes.length >= 4);
      assert.deepEqual(c.bytes, CONNACK_ACCEPTED);
      c.socket.write(DISCONNECT);
      await c.ended; // the server's FIN ('end'), not a reset ('error' then 'close')
      // end() would have left the socket half-closed, in the linger until the client's FIN
      assert.equal(lingeringStreams(), lingeringBefore, 'not waiting in the linger for the client');
      await until('the server to drop the connection', async () => (await broker.metric('vigil_connections_current', { listener: 'tcp' })) === 0);
      assert.deepEqual(c.errors, []);
    } finally {
      c.socket.destroy();
    }
  });

  it('a CONNECT and DISCONNECT written together still get their CONNACK before the close', async () => {
    const c = await halfOpenClient(broker.port);
    try {
      c.socket.write(Buffer.concat([connectBytes('pipelined-close'), DISCONNECT]));
      await c.ended;
      assert.deepEqual(c.bytes, CONNACK_ACCEPTED);
      assert.deepEqual(c.errors, []);
      await until('the server to drop the connection', async () => (await broker.metric('vigil_connections_current', { listener: 'tcp' })) === 0);
    } finally {
      c.socket.destroy();
    }
  });
});
