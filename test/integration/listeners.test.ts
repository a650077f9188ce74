// MQTT over TLS (with and without client certificates) and over WebSocket, with a real
// MQTT client, against listeners built the way server.ts builds its context. Certificates
// are made at test time with the openssl CLI in a temporary directory.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import WebSocket from 'ws';
import { createTlsListener, createWebSocketListener, type ListenerDeps, type MqttListener } from '../../src/transport/listeners.js';
import type { Channel } from '../../src/protocol/channel.js';
import { createTestContext, type TestContext } from '../helpers/channel-context.js';
import { waitFor } from '../helpers/mqtt.js';

interface Pki {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** Signed by a CA the broker does not trust. */
  strangerCert: string;
  strangerKey: string;
}

function haveOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function makePki(): Pki {
  const dir = mkdtempSync(join(tmpdir(), 'vigil-pki-'));
  const p = (f: string) => join(dir, f);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], timeout: 15_000 });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const ca = (name: string) => ssl('req', '-x509', ...ec, '-keyout', p(`${name}.key`), '-out', p(`${name}.crt`), '-days', '1', '-subj', `/CN=${name}`);
  const leaf = (name: string, cn: string, caName: string, ext: string) => {
    writeFileSync(p(`${name}.ext`), ext);
    ssl('req', ...ec, '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`), '-subj', `/O=Vigil Tests/CN=${cn}`);
    ssl('x509', '-req', '-in', p(`${name}.csr`), '-CA', p(`${caName}.crt`), '-CAkey', p(`${caName}.key`), '-CAcreateserial', '-out', p(`${name}.crt`), '-days', '1', '-extfile', p(`${name}.ext`));
  };
  ca('vigil-test-ca');
  ca('stranger-ca');
  leaf('server', 'localhost', 'vigil-test-ca', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  leaf('client', 'device-42', 'vigil-test-ca', 'extendedKeyUsage=clientAuth\n');
  leaf('stranger', 'intruder', 'stranger-ca', 'extendedKeyUsage=clientAuth\n');
  return {
    dir,
    ca: p('vigil-test-ca.crt'),
    serverCert: p('server.crt'),
    serverKey: p('server.key'),
    clientCert: p('client.crt'),
    clientKey: p('client.key'),
    strangerCert: p('stranger.crt'),
    strangerKey: p('stranger.key'),
  };
}

function connect(url: string, options: IClientOptions = {}): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 5, ...options });
    client.once('connect', () => resolve(client));
    client.once('error', (err) => {
      client.end(true);
      reject(err);
    });
    client.once('close', () => reject(new Error('closed before CONNACK')));
  });
}

/** Connects expecting refusal: resolves with the error/close that ended it. */
function expectRefused(url: string, options: IClientOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 5, ...options });
    const done = (why: string) => {
      client.end(true);
      resolve(why);
    };
    client.once('connect', () => {
      client.end(true);
      reject(new Error('connected although it should have been refused'));
    });
    client.once('error', (err) => done(err.message));
    client.once('close', () => done('closed'));
  });
}

/** Subscribes with one client, publishes with another, resolves with what arrived. */
async function roundTrip(sub: MqttClient, pub: MqttClient, topic: string, payload: string): Promise<string> {
  await sub.subscribeAsync(topic, { qos: 1 });
  const got = new Promise<string>((resolve) => sub.once('message', (_t, p) => resolve(p.toString())));
  await pub.publishAsync(topic, payload, { qos: 1 });
  return withTimeout(got, 5000, `message on ${topic}`);
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_r, reject) => (timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)))]).finally(() => clearTimeout(timer));
}

function channelFor(t: TestContext, clientId: string): Channel | undefined {
  return [...(t.ctx.broker.connections as Set<unknown>)].find((c) => (c as Channel).clientId === clientId) as Channel | undefined;
}

const skipTls = haveOpenssl() ? false : 'openssl CLI not found';

/**
 * The tracking a server does through admit (its open streams, for its connection limit and
 * stop()) ends when each admitted stream closes: the listener passes untrack to the
 * transport, which calls it once per stream from its own 'close' listener.
 */
async function checkUntrack(make: (deps: ListenerDeps) => MqttListener, url: (port: number) => string, options: IClientOptions, secondAbrupt: boolean): Promise<void> {
  const t = createTestContext();
  const open = new Set<unknown>();
  const untracked: unknown[] = [];
  const l = make({
    ctx: t.ctx,
    admit: (stream) => (open.add(stream), true),
    untrack: (stream) => {
      untracked.push(stream);
      open.delete(stream);
    },
  });
  await l.listen(0, '127.0.0.1');
  try {
    const a = await connect(url(l.port), { ...options, clientId: 'tracked-a' });
    const b = await connect(url(l.port), { ...options, clientId: 'tracked-b' });
    assert.equal(open.size, 2);
    a.end();
    await waitFor(() => open.size === 1, 20_000, 'the first stream to be untracked');
    // secondAbrupt: no DISCONNECT, the client's socket is destroyed (mqtt.js over WebSocket
    // does not close its socket on end(true); the server sees that client only at keep alive)
    b.end(secondAbrupt);
    await waitFor(() => open.size === 0, 20_000, 'the second stream to be untracked');
    assert.equal(untracked.length, 2, 'once per stream');
    assert.notEqual(untracked[0], untracked[1]);
  } finally {
    await l.close();
    t.close();
  }
}

describe('TLS listener', { skip: skipTls, timeout: 60_000 }, () => {
  let pki: Pki;
  before(() => {
    pki = makePki();
  });
  after(() => rmSync(pki.dir, { recursive: true, force: true }));

  describe('server certificate only, client certificates optional', () => {
    let t: TestContext;
    let listener: MqttListener;
    let url: string;
    const clients: MqttClient[] = [];
    before(async () => {
      t = createTestContext();
      listener = createTlsListener({ cert: pki.serverCert, key: pki.serverKey, ca: pki.ca, requireClientCert: false }, { ctx: t.ctx });
      await listener.listen(0, '127.0.0.1');
      url = `mqtts://127.0.0.1:${listener.port}`;
    });
    after(async () => {
      for (const c of clients) c.end(true);
      await listener.close();
      t.close();
    });

    it('carries publish/subscribe for a client that trusts the CA', async () => {
      const ca = readFileSync(pki.ca);
      const sub = await connect(url, { ca, clientId: 'tls-sub' });
      const pub = await connect(url, { ca, clientId: 'tls-pub', protocolVersion: 4 });
      clients.push(sub, pub);
      assert.equal(await roundTrip(sub, pub, 'tls/hello', 'over tls'), 'over tls');
      const current = await t.ctx.metrics.connectionsCurrent.get();
      assert.equal(current.values.find((v) => v.labels.listener === 'tls')?.value, 2);
      const opened = await t.ctx.metrics.connectionsOpenedTotal.get();
      assert.equal(opened.values.find((v) => v.labels.listener === 'tls')?.value, 2);
      assert.equal(channelFor(t, 'tls-sub')?.identity?.certSubject, undefined, 'no client certificate, no subject');
    });

    it('tells the admit hook when an admitted TLS stream closes, once per stream', async () => {
      const files = { cert: pki.serverCert, key: pki.serverKey, ca: pki.ca, requireClientCert: false };
      await checkUntrack((deps) => createTlsListener(files, deps), (port) => `mqtts://127.0.0.1:${port}`, { ca: readFileSync(pki.ca) }, true);
    });

    it('passes the CN of a verified client certificate to authentication', async () => {
      const c = await connect(url, { ca: readFileSync(pki.ca), cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey), clientId: 'tls-cert' });
      clients.push(c);
      assert.equal(channelFor(t, 'tls-cert')?.io.listener, 'tls');
      assert.equal(channelFor(t, 'tls-cert')?.identity?.certSubject, 'device-42');
    });

    it('gives no subject for a certificate from an untrusted CA', async () => {
      const c = await connect(url, { ca: readFileSync(pki.ca), cert: readFileSync(pki.strangerCert), key: readFileSync(pki.strangerKey), clientId: 'tls-stranger' });
      clients.push(c);
      assert.equal(channelFor(t, 'tls-stranger')?.identity?.certSubject, undefined);
    });

    it('refuses a client that does not trust the server certificate', async () => {
      const why = await expectRefused(url, { clientId: 'tls-untrusting' });
      assert.match(why, /certificate|closed/i);
    });
  });

  describe('client certificate required', () => {
    let t: TestContext;
    let listener: MqttListener;
    let url: string;
    before(async () => {
      t = createTestContext();
      listener = createTlsListener({ cert: pki.serverCert, key: pki.serverKey, ca: pki.ca, requireClientCert: true }, { ctx: t.ctx });
      await listener.listen(0, '127.0.0.1');
      url = `mqtts://127.0.0.1:${listener.port}`;
    });
    after(async () => {
      await listener.close();
      t.close();
    });

    it('accepts a client with a certificate signed by the CA and carries messages', async () => {
      const opts = { ca: readFileSync(pki.ca), cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey) };
      const sub = await connect(url, { ...opts, clientId: 'req-sub' });
      const pub = await connect(url, { ...opts, clientId: 'req-pub' });
      try {
        assert.equal(await roundTrip(sub, pub, 'mtls/x', 'mutual'), 'mutual');
        assert.equal(channelFor(t, 'req-pub')?.identity?.certSubject, 'device-42');
      } finally {
        sub.end(true);
        pub.end(true);
      }
    });

    it('refuses a client without a certificate', async () => {
      await expectRefused(url, { ca: readFileSync(pki.ca), clientId: 'req-nocert' });
      assert.equal(channelFor(t, 'req-nocert'), undefined);
    });

    it('refuses a client whose certificate another CA signed, and counts the handshake failure', async () => {
      await expectRefused(url, { ca: readFileSync(pki.ca), cert: readFileSync(pki.strangerCert), key: readFileSync(pki.strangerKey), clientId: 'req-stranger' });
      const refused = await t.ctx.metrics.connectionsRefusedTotal.get();
      const n = refused.values.find((v) => v.labels.reason === 'tls_handshake')?.value ?? 0;
      assert.ok(n >= 1, `tls_handshake refusals: ${n}`);
    });
  });

  it('names the file it cannot read', () => {
    const t = createTestContext();
    try {
      assert.throws(() => createTlsListener({ cert: join(pki.dir, 'missing.crt'), key: pki.serverKey, requireClientCert: false }, { ctx: t.ctx }), /missing\.crt/);
    } finally {
      t.close();
    }
  });
});

describe('WebSocket listener', { timeout: 60_000 }, () => {
  let t: TestContext;
  let listener: MqttListener;
  let port: number;
  before(async () => {
    t = createTestContext();
    listener = createWebSocketListener({ ctx: t.ctx });
    await listener.listen(0, '127.0.0.1');
    port = listener.port;
  });
  after(async () => {
    await listener.close();
    t.close();
  });

  it('carries publish/subscribe at /mqtt with subprotocol mqtt, for 5.0 and 3.1.1 clients', async () => {
    const url = `ws://127.0.0.1:${port}/mqtt`;
    const sub = await connect(url, { clientId: 'ws-sub' });
    const pub = await connect(url, { clientId: 'ws-pub', protocolVersion: 4 });
    try {
      assert.equal(await roundTrip(sub, pub, 'ws/hello', 'over websocket'), 'over websocket');
      const ch = channelFor(t, 'ws-sub');
      assert.equal(ch?.io.listener, 'ws');
      assert.equal(ch?.io.remoteAddress, '127.0.0.1');
      const opened = await t.ctx.metrics.connectionsOpenedTotal.get();
      assert.equal(opened.values.find((v) => v.labels.listener === 'ws')?.value, 2);
    } finally {
      sub.end(true);
      pub.end(true);
    }
  });

  it('selects mqtt, accepts mqttv3.1, and refuses other subprotocols', async () => {
    const open = (protocols: string[]) =>
      new Promise<string>((resolve, reject) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/mqtt`, protocols);
        ws.once('open', () => {
          const chosen = ws.protocol;
          ws.terminate();
          resolve(chosen);
        });
        ws.once('unexpected-response', (_req, res) => {
          ws.terminate();
          resolve(`HTTP ${res.statusCode}`);
        });
        ws.once('error', reject);
      });
    assert.equal(await open(['mqttv3.1', 'mqtt']), 'mqtt');
    assert.equal(await open(['mqttv3.1']), 'mqttv3.1');
    assert.equal(await open(['stomp']), 'HTTP 400');
  });

  it('answers 404 off /mqtt and 426 to plain HTTP', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/other`, ['mqtt']);
      ws.once('unexpected-response', (_req, res) => {
        ws.terminate();
        resolve(res.statusCode ?? 0);
      });
      ws.once('open', () => reject(new Error('opened on the wrong path')));
      ws.once('error', reject);
    });
    assert.equal(status, 404);
    const plain = await new Promise<number>((resolve, reject) => {
      http.get(`http://127.0.0.1:${port}/mqtt`, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      }).once('error', reject);
    });
    assert.equal(plain, 426);
  });

  it('refuses a connection the admit hook turns away', async () => {
    const t2 = createTestContext();
    const gated = createWebSocketListener({ ctx: t2.ctx, admit: () => false });
    await gated.listen(0, '127.0.0.1');
    try {
      await expectRefused(`ws://127.0.0.1:${gated.port}/mqtt`, { clientId: 'gated', connectTimeout: 2000 });
      assert.equal(t2.ctx.broker.connections.size, 0);
    } finally {
      await gated.close();
      t2.close();
    }
  });

  it('tells the admit hook when an admitted WebSocket stream closes, once per stream', async () => {
    await checkUntrack((deps) => createWebSocketListener(deps), (p) => `ws://127.0.0.1:${p}/mqtt`, {}, false);
  });

  it('closes connections still open when the listener closes', async () => {
    const t3 = createTestContext();
    const l = createWebSocketListener({ ctx: t3.ctx });
    await l.listen(0, '127.0.0.1');
    const c = await connect(`ws://127.0.0.1:${l.port}/mqtt`, { clientId: 'left-open' });
    const closed = new Promise<void>((resolve) => c.once('close', () => resolve()));
    await withTimeout(l.close(), 5000, 'listener close');
    await withTimeout(closed, 5000, 'client close');
    c.end(true);
    t3.close();
  });
});
