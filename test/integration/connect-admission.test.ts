// A fleet reconnecting at once: CONNECTs beyond what the auth pool holds wait in the
// admission queue (first in, first out) and all connect; Server Busy only past its bound.
// The connect timeout counts until the CONNECT arrives; the broker's own wait after it has
// its own, longer bound (VIGIL_CONNECT_ADMISSION_TIMEOUT_S).
import { after, afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { IConnackPacket, IConnectPacket } from 'mqtt-packet';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { makeKey, signHmac, signToken, startJwksServer, type JwksServer } from '../helpers/jwt.js';
import { uniqueId, waitFor } from '../helpers/mqtt.js';
import { RawClient } from '../helpers/raw-client.js';

const SECRET = 'admission-test-secret-0123456789abcdef';

/** Opens `tokens.length` sockets, then sends every CONNECT in one synchronous loop: one turn for the broker. */
async function connectAllAtOnce(port: number, tokens: readonly { sub: string; token: string }[]): Promise<{ codes: number[]; clients: RawClient[] }> {
  const clients = await Promise.all(tokens.map(() => RawClient.open(port, 4)));
  tokens.forEach((t, i) => {
    clients[i]!.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: `${t.sub}-${uniqueId()}`, keepalive: 0, username: t.sub, password: Buffer.from(t.token) } as IConnectPacket);
  });
  const codes = await Promise.all(clients.map(async (c) => ((await c.next('connack', 30000)) as IConnackPacket).returnCode!));
  return { codes, clients };
}

async function hmacTokens(n: number): Promise<{ sub: string; token: string }[]> {
  return Promise.all(Array.from({ length: n }, async (_, i) => ({ sub: `dev-${i}`, token: await signHmac(SECRET, { sub: `dev-${i}` }) })));
}

describe('connect admission', { timeout: 60000 }, () => {
  let broker: TestBroker | undefined;
  let jwks: JwksServer | undefined;
  const raws: RawClient[] = [];
  afterEach(async () => {
    for (const r of raws.splice(0)) r.close();
    await broker?.close();
    broker = undefined;
    await jwks?.close();
    jwks = undefined;
  });
  after(() => undefined);

  const hmacBroker = (extra: Parameters<typeof startBroker>[0]) =>
    startBroker({ auth: 'jwt', jwtSecret: SECRET, jwtAlgorithms: ['HS256'], authWorkers: 1, authQueueMax: 2, ...extra });

  it('300 distinct tokens in one turn with a pool of 2: every CONNECT is accepted, in the admission queue meanwhile', async () => {
    broker = await hmacBroker({});
    const tokens = await hmacTokens(300);
    const { codes, clients } = await connectAllAtOnce(broker.port, tokens);
    raws.push(...clients);
    assert.deepEqual(codes.filter((c) => c !== 0), [], 'no CONNECT refused');
    assert.equal(broker.server.identity.pool.tasksSubmitted('verifyToken'), 300);
    assert.equal(await broker.metric('vigil_auth_admission_waiting'), 0);
    assert.equal(await broker.metric('vigil_auth_verifications_total', { outcome: 'refused', reason: 'server_busy' }), 0);
  });

  it('without an admission queue (VIGIL_AUTH_ADMISSION_MAX=0) the same turn gets Server Busy past the pool', async () => {
    broker = await hmacBroker({ authAdmissionMax: 0 });
    const { codes, clients } = await connectAllAtOnce(broker.port, await hmacTokens(300));
    raws.push(...clients);
    const busy = codes.filter((c) => c === 3).length; // 3.1.1: 0x03 Server unavailable
    assert.ok(busy > 0, 'some CONNECTs get Server Busy');
    assert.equal(busy + codes.filter((c) => c === 0).length, 300, 'every CONNECT is answered: accepted or busy');
    assert.equal(await broker.metric('vigil_auth_verifications_total', { outcome: 'refused', reason: 'server_busy' }), busy);
  });

  it('past the admission bound: Server Busy, everything else accepted', async () => {
    broker = await hmacBroker({ authAdmissionMax: 10 });
    const { codes, clients } = await connectAllAtOnce(broker.port, await hmacTokens(300));
    raws.push(...clients);
    const busy = codes.filter((c) => c === 3).length;
    assert.ok(busy > 0, 'some CONNECTs get Server Busy');
    assert.equal(busy + codes.filter((c) => c === 0).length, 300);
  });

  /** A broker whose JWKS answers the refetch for an unknown kid only when the test says so. */
  async function heldRefetch(extra: Parameters<typeof startBroker>[0]) {
    const keyA = await makeKey('key-a');
    const keyB = await makeKey('key-b');
    jwks = await startJwksServer([keyA]);
    broker = await startBroker({ auth: 'jwt', jwks: jwks.url, jwksMinRefreshS: 0, connectTimeoutS: 1, ...extra });
    const release = jwks.hold();
    jwks.setKeys([keyA, keyB]);
    const token = await signToken(keyB, { sub: 'late-key' });
    const client = await RawClient.open(broker.port, 4);
    raws.push(client);
    client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: uniqueId(), keepalive: 0, username: 'late-key', password: Buffer.from(token) } as IConnectPacket);
    await waitFor(() => jwks!.held > 0, 20000, 'the refetch for the unknown kid');
    return { client, release };
  }

  it('VIGIL_CONNECT_TIMEOUT_S counts until the CONNECT arrives: a CONNECT waiting on the broker longer still connects', async () => {
    const { client, release } = await heldRefetch({});
    // opened after the CONNECTing socket: once the timeout has closed it, it would have closed the other too
    const idle = await RawClient.open(broker!.port, 4);
    raws.push(idle);
    await idle.waitForClose(20000);
    assert.equal(client.closed, false, 'the CONNECT waiting for the broker is still open');
    release();
    const connack = (await client.next('connack', 20000)) as IConnackPacket;
    assert.equal(connack.returnCode, 0);
    assert.equal(await broker!.metric('vigil_limit_hits_total', { limit: 'connect_timeout' }), 1);
  });

  it('VIGIL_CONNECT_ADMISSION_TIMEOUT_S bounds the wait after the CONNECT: Server Busy, then closed', async () => {
    const { client, release } = await heldRefetch({ connectAdmissionTimeoutS: 1 });
    try {
      const connack = (await client.next('connack', 20000)) as IConnackPacket;
      assert.equal(connack.returnCode, 3); // 3.1.1 Server unavailable = 5.0 Server Busy
      await client.waitForClose(20000);
      assert.equal(await broker!.metric('vigil_limit_hits_total', { limit: 'connect_admission_timeout' }), 1);
    } finally {
      release();
    }
  });
});
