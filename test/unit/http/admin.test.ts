// The admin API handler over a real HTTP server on loopback, with a fake AdminDeps.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createAdminHandler, explainWillRecord, tokenMatches, type AdminDeps, type ClientInfo, type RevocationKind, type WillExplanation } from '../../../src/http/admin.js';
import type { WillRecord } from '../../../src/store/types.js';

const TOKEN = 's3cret-admin-token';
const NOW = Date.UTC(2025, 0, 1, 12, 0, 0);

const record: WillRecord = {
  clientId: 'sensor/7',
  message: { topic: 'status/sensor-7', payload: Buffer.from('offline, a secret payload'), qos: 1, retain: true, origin: 'sensor/7' },
  delayS: 30,
  identity: { username: 'sensor-7', clientId: 'sensor/7', roles: ['device'], jti: 'tok-1', kid: 'k2025', authenticatedAtMs: NOW - 60_000, expiresAtMs: NOW - 1000 },
  epoch: 1,
  protocolVersion: 5,
};

class FakeDeps implements AdminDeps {
  kicked: string[] = [];
  revoked: { kind: RevocationKind; value: string; ttlS?: number }[] = [];
  clients: ClientInfo[] = [
    { clientId: 'sensor/7', node: 'n1', username: 'sensor-7', roles: ['device'], protocolVersion: 5, subscriptions: 2, connectedSince: new Date(NOW).toISOString() },
  ];
  failList = false;
  listClients(): ClientInfo[] {
    if (this.failList) throw new Error('boom');
    return this.clients;
  }
  kick(id: string): boolean {
    if (!this.clients.some((c) => c.clientId === id)) return false;
    this.kicked.push(id);
    return true;
  }
  revoke(kind: RevocationKind, value: string, ttlS?: number): void {
    this.revoked.push({ kind, value, ttlS });
  }
  async explainWill(id: string): Promise<WillExplanation | undefined> {
    if (id !== record.clientId) return undefined;
    return explainWillRecord({ record, verdict: { allowed: false, reason: 'revoked' }, willAuthz: 'connect+fire', owner: { node: 'n1', lease: 'local' }, nowMs: NOW, pendingDueAtMs: NOW + 5000 });
  }
}

async function serve(token: string, deps: AdminDeps): Promise<{ base: string; server: http.Server }> {
  const handler = createAdminHandler({ token, deps });
  const server = http.createServer(async (req, res) => {
    if (!(await handler(req, res))) res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found (server)"}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

async function call(base: string, path: string, init: { method?: string; token?: string; body?: string } = {}) {
  const headers: Record<string, string> = {};
  if (init.token !== undefined) headers.authorization = `Bearer ${init.token}`;
  if (init.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(base + path, { method: init.method ?? 'GET', headers, body: init.body, signal: AbortSignal.timeout(5000) });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text ? JSON.parse(text) : undefined };
}

describe('admin API', () => {
  const deps = new FakeDeps();
  let base: string;
  let server: http.Server;
  before(async () => ({ base, server } = await serve(TOKEN, deps)));
  after(() => new Promise<void>((r) => server.close(() => r())));

  it('requires the bearer token on every endpoint', async () => {
    for (const [method, path] of [['GET', '/admin/clients'], ['POST', '/admin/clients/x/kick'], ['POST', '/admin/revoke'], ['GET', '/admin/wills/x/explain'], ['GET', '/admin/nope']]) {
      const none = await call(base, path, { method });
      assert.equal(none.status, 401, `${method} ${path} without a token`);
      assert.match(none.headers.get('www-authenticate') ?? '', /Bearer/);
      assert.equal((await call(base, path, { method, token: 'wrong' })).status, 401, `${method} ${path} with a wrong token`);
      assert.equal((await call(base, path, { method, token: TOKEN + 'x' })).status, 401);
    }
    const basic = await fetch(`${base}/admin/clients`, { headers: { authorization: `Basic ${Buffer.from(`admin:${TOKEN}`).toString('base64')}` } });
    assert.equal(basic.status, 401);
    await basic.text();
    assert.deepEqual(deps.kicked, []);
    assert.deepEqual(deps.revoked, []);
  });

  it('leaves other paths to the caller', async () => {
    const r = await call(base, '/metrics');
    assert.equal(r.status, 404);
    assert.equal(r.json.error, 'not found (server)');
    assert.equal((await call(base, '/administrator', { token: TOKEN })).json.error, 'not found (server)');
  });

  it('lists clients', async () => {
    const r = await call(base, '/admin/clients', { token: TOKEN });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-type'), 'application/json');
    assert.equal(r.json.count, 1);
    assert.deepEqual(r.json.clients[0], deps.clients[0]);
  });

  it('kicks a connected client (percent-encoded id) and answers 404 for an unknown one', async () => {
    const r = await call(base, `/admin/clients/${encodeURIComponent('sensor/7')}/kick`, { method: 'POST', token: TOKEN });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json, { clientId: 'sensor/7', kicked: true });
    assert.deepEqual(deps.kicked, ['sensor/7']);
    assert.equal((await call(base, '/admin/clients/ghost/kick', { method: 'POST', token: TOKEN })).status, 404);
    const wrongMethod = await call(base, '/admin/clients/sensor-7/kick', { token: TOKEN });
    assert.equal(wrongMethod.status, 405);
    assert.equal(wrongMethod.headers.get('allow'), 'POST');
  });

  it('revokes a subject or a jti and validates the body', async () => {
    assert.equal((await call(base, '/admin/revoke', { method: 'POST', token: TOKEN, body: '{"subject":"sensor-7"}' })).status, 200);
    const r = await call(base, '/admin/revoke', { method: 'POST', token: TOKEN, body: '{"jti":"tok-1","ttlS":3600}' });
    assert.deepEqual(r.json, { revoked: { kind: 'jti', value: 'tok-1', ttlS: 3600 } });
    assert.deepEqual(deps.revoked, [{ kind: 'subject', value: 'sensor-7', ttlS: undefined }, { kind: 'jti', value: 'tok-1', ttlS: 3600 }]);
    for (const body of ['not json', '[]', '{}', '{"subject":"a","jti":"b"}', '{"subject":""}', '{"subject":42}', '{"jti":"x","ttlS":-1}', '{"jti":"x","ttlS":1.5}', JSON.stringify({ subject: 'x'.repeat(2000) })]) {
      const bad = await call(base, '/admin/revoke', { method: 'POST', token: TOKEN, body });
      assert.equal(bad.status, 400, body.slice(0, 40));
      assert.equal(typeof bad.json.error, 'string');
    }
    const big = await call(base, '/admin/revoke', { method: 'POST', token: TOKEN, body: JSON.stringify({ subject: 'a', pad: 'x'.repeat(20_000) }) });
    assert.equal(big.status, 413);
    assert.equal(deps.revoked.length, 2);
    assert.equal((await call(base, '/admin/revoke', { token: TOKEN })).status, 405);
  });

  it('explains a will without its payload', async () => {
    const r = await call(base, `/admin/wills/${encodeURIComponent('sensor/7')}/explain`, { token: TOKEN });
    assert.equal(r.status, 200);
    const e = r.json as WillExplanation;
    assert.equal(e.state, 'pending');
    assert.deepEqual(e.will, { topic: 'status/sensor-7', qos: 1, retain: true, delayS: 30, payloadBytes: 25, messageExpiryS: null, protocolVersion: 5 });
    assert.equal(e.authorization.jti, 'tok-1');
    assert.equal(e.authorization.kid, 'k2025');
    assert.equal(e.authorization.tokenExpired, true);
    assert.equal(e.authorization.authenticatedAt, new Date(NOW - 60_000).toISOString());
    assert.deepEqual([e.decisionIfFiredNow.allowed, e.decisionIfFiredNow.reason], [false, 'revoked']);
    assert.match(e.decisionIfFiredNow.explanation, /revoked/);
    assert.deepEqual(e.pending, { dueAt: new Date(NOW + 5000).toISOString(), dueInMs: 5000 });
    assert.equal(e.attachedTo, null);
    assert.deepEqual(e.owner, { node: 'n1', lease: 'local', leaseExpiresAt: null });
    assert.ok(!JSON.stringify(e).includes('secret payload'), 'the payload never leaves the broker');
    assert.equal((await call(base, '/admin/wills/nobody/explain', { token: TOKEN })).status, 404);
  });

  it('answers 500 without details when a dependency throws', async () => {
    deps.failList = true;
    try {
      const r = await call(base, '/admin/clients', { token: TOKEN });
      assert.equal(r.status, 500);
      assert.deepEqual(r.json, { error: 'internal error' });
    } finally {
      deps.failList = false;
    }
  });
});

describe('admin API without a token configured', () => {
  const deps = new FakeDeps();
  let base: string;
  let server: http.Server;
  before(async () => ({ base, server } = await serve('', deps)));
  after(() => new Promise<void>((r) => server.close(() => r())));

  it('answers 404 on every admin path, whatever the token', async () => {
    for (const token of [undefined, '', 'anything']) {
      assert.equal((await call(base, '/admin/clients', { token })).status, 404);
      assert.equal((await call(base, '/admin/revoke', { method: 'POST', token, body: '{"subject":"x"}' })).status, 404);
      assert.equal((await call(base, '/admin/clients/sensor%2F7/kick', { method: 'POST', token })).status, 404);
    }
    assert.deepEqual(deps.revoked, []);
    assert.deepEqual(deps.kicked, []);
  });
});

describe('tokenMatches', () => {
  it('matches only the exact token, and never an empty one', () => {
    assert.equal(tokenMatches('abc', 'abc'), true);
    assert.equal(tokenMatches('abd', 'abc'), false);
    assert.equal(tokenMatches('ab', 'abc'), false);
    assert.equal(tokenMatches('', ''), false);
  });
});
