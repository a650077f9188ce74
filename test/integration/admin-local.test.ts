// The admin API on one node, end to end: real MQTT clients on a real broker, the handler
// mounted on a loopback HTTP server with localAdminDeps, as server.ts wires it.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { willAuthorizedAtFire } from '../../src/broker/wills.js';
import { createAdminHandler, type WillExplanation } from '../../src/http/admin.js';
import { localAdminDeps } from '../../src/http/admin-local.js';
import { attachConnection } from '../../src/transport/connection.js';
import { createTestContext, type TestContext } from '../helpers/channel-context.js';

const TOKEN = 'local-admin-token';

function connect(port: number, options: IClientOptions): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 5000, ...options });
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
}

describe('admin API over a live broker', { timeout: 30_000 }, () => {
  let t: TestContext;
  let mqttServer: net.Server;
  let httpServer: http.Server;
  let port: number;
  let base: string;
  const revoked: string[] = [];
  const clients: MqttClient[] = [];

  before(async () => {
    t = createTestContext();
    const { ctx } = t;
    mqttServer = net.createServer((s) => attachConnection(s, ctx, 'tcp'));
    await new Promise<void>((r) => mqttServer.listen(0, '127.0.0.1', r));
    port = (mqttServer.address() as AddressInfo).port;
    const admin = createAdminHandler({
      token: TOKEN,
      deps: localAdminDeps({
        broker: ctx.broker,
        nodeId: ctx.config.nodeId,
        clock: ctx.clock,
        willAuthz: ctx.config.willAuthz,
        decide: (record) => willAuthorizedAtFire(record, { authenticator: ctx.authenticator, authorizer: ctx.authorizer, willAuthz: ctx.config.willAuthz }),
        revoke: (kind, value) => void revoked.push(`${kind}:${value}`),
      }),
    });
    httpServer = http.createServer(async (req, res) => {
      if (!(await admin(req, res))) res.writeHead(404).end();
    });
    await new Promise<void>((r) => httpServer.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(httpServer.address() as AddressInfo).port}`;
  });

  after(async () => {
    for (const c of clients) c.end(true);
    for (const c of t.ctx.broker.connections) (c as unknown as { close(rc: number, why: string): void }).close(0x8b, 'test over');
    await new Promise<void>((r) => mqttServer.close(() => r()));
    await new Promise<void>((r) => httpServer.close(() => r()));
    httpServer.closeAllConnections();
    t.close();
  });

  const get = async (path: string, method = 'GET') => {
    const res = await fetch(base + path, { method, headers: { authorization: `Bearer ${TOKEN}` }, signal: AbortSignal.timeout(5000) });
    return { status: res.status, json: await res.json() };
  };

  it('lists, explains, kicks with 0x98, then explains the pending will', async () => {
    const watcher = await connect(port, { clientId: 'watcher', protocolVersion: 5 });
    clients.push(watcher);
    await watcher.subscribeAsync('status/#', { qos: 1 });
    const device = await connect(port, {
      clientId: 'device-1',
      username: 'dev-user',
      protocolVersion: 5,
      properties: { sessionExpiryInterval: 300 },
      will: { topic: 'status/device-1', payload: Buffer.from('gone'), qos: 1, retain: false, properties: { willDelayInterval: 60 } },
    });
    clients.push(device);
    await device.subscribeAsync(['a/1', 'a/2']);

    const list = await get('/admin/clients');
    assert.equal(list.status, 200);
    const row = list.json.clients.find((c: { clientId: string }) => c.clientId === 'device-1');
    assert.equal(row.username, 'dev-user');
    assert.deepEqual(row.roles, ['anonymous']);
    assert.equal(row.protocolVersion, 5);
    assert.equal(row.subscriptions, 2);
    assert.equal(row.node, t.ctx.config.nodeId);
    assert.ok(!Number.isNaN(Date.parse(row.connectedSince)));

    const attached = (await get('/admin/wills/device-1/explain')).json as WillExplanation;
    assert.equal(attached.state, 'attached');
    assert.equal(attached.will.topic, 'status/device-1');
    assert.equal(attached.will.delayS, 60);
    assert.equal(attached.will.payloadBytes, 4);
    assert.equal(attached.attachedTo?.listener, 'tcp');
    assert.equal(attached.decisionIfFiredNow.allowed, true);
    assert.deepEqual(attached.owner, { node: t.ctx.config.nodeId, lease: 'local', leaseExpiresAt: null });
    assert.equal((await get('/admin/wills/watcher/explain')).status, 404, 'watcher has no will');

    const disconnect = new Promise<number | undefined>((resolve) => device.once('disconnect', (p) => resolve(p.reasonCode)));
    const closed = new Promise<void>((resolve) => device.once('close', () => resolve()));
    assert.equal((await get('/admin/clients/device-1/kick', 'POST')).status, 200);
    assert.equal(await disconnect, 0x98);
    await closed;
    // the socket close reaches the broker a moment after the client sees it
    let pending: WillExplanation | undefined;
    for (let i = 0; i < 50 && pending?.state !== 'pending'; i++) {
      await new Promise((r) => setTimeout(r, 20));
      const r = await get('/admin/wills/device-1/explain');
      if (r.status === 200) pending = r.json;
    }
    assert.equal(pending?.state, 'pending');
    assert.ok(pending!.pending!.dueInMs > 50_000 && pending!.pending!.dueInMs <= 60_000);
    assert.equal(pending!.attachedTo, null);
    assert.equal((await get('/admin/clients/device-1/kick', 'POST')).status, 404);
    assert.ok(!(await get('/admin/clients')).json.clients.some((c: { clientId: string }) => c.clientId === 'device-1'));
  });

  it('passes revocations through', async () => {
    const res = await fetch(`${base}/admin/revoke`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` }, body: '{"subject":"dev-user"}' });
    assert.equal(res.status, 200);
    await res.text();
    assert.deepEqual(revoked, ['subject:dev-user']);
  });
});
