// JWKS fetches are bounded: a body is streamed with a byte cap (VIGIL_JWKS_MAX_BYTES) inside a
// total timeout, and a new set that is empty or has no usable key keeps the old keys, from a
// URL and from a file alike. Real RS256 tokens through mqtt.js, both protocol versions.
import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, uniqueId, VERSIONS, versionName, type Version } from '../helpers/mqtt.js';
import { jwksDocument, makeKey, signToken, startJwksServer, tempDir, type JwksServer, type TempDir, type TestKey } from '../helpers/jwt.js';
import { waitUntil } from '../helpers/cluster.js';
import { loadConfig, ConfigError } from '../../src/config.js';

const CONNECT_MS = 15000;
const MiB = 1024 * 1024;

let dir: TempDir;
let key: TestKey;
let idp: JwksServer | undefined;
let broker: TestBroker | undefined;
const pool = new ClientPool();

beforeEach(async () => {
  dir = await tempDir();
  key = await makeKey('K1', 'RS256');
});
afterEach(async () => {
  await pool.closeAll();
  await broker?.close();
  broker = undefined;
  await idp?.close();
  idp = undefined;
  await dir.remove();
});

/** A fresh token each time (never a verified-token cache hit): the keys in force now decide. */
async function connects(b: TestBroker, v: Version): Promise<boolean> {
  const token = await signToken(key, { sub: uniqueId('dev') });
  try {
    const c = await pool.connect(b.url, { protocolVersion: v, clientId: uniqueId(), username: '', password: Buffer.from(token) }, CONNECT_MS);
    c.mqtt.end(true);
    return true;
  } catch {
    return false;
  }
}

describe('JWKS fetches are bounded', { timeout: 120000 }, () => {
  it('a 300 MiB chunked body is abandoned at the byte cap: RSS stays within 64 MiB, the old keys stay', async () => {
    idp = await startJwksServer([key]);
    const b = (broker = await startBroker({ auth: 'jwt', jwks: idp.url, jwtAlgorithms: ['RS256'] }));
    for (const v of VERSIONS) assert.equal(await connects(b, v), true, versionName(v));
    global.gc?.();
    const before = process.memoryUsage().rss;
    const sent = idp.streamEndless(300 * MiB);
    assert.equal(await b.server.identity.jwks!.reload('manual'), false, 'not applied');
    const written = await sent;
    const grew = process.memoryUsage().rss - before;
    console.log(`JWKS body: server wrote ${(written / MiB).toFixed(1)} MiB before the broker hung up; RSS grew ${(grew / MiB).toFixed(1)} MiB`);
    assert.ok(written < 300 * MiB, `the broker hung up (${written} bytes written)`);
    assert.ok(grew < 64 * MiB, `RSS grew ${(grew / MiB).toFixed(1)} MiB`);
    assert.match(b.server.identity.jwks!.lastError?.message ?? '', /larger than 1048576 bytes/);
    for (const v of VERSIONS) assert.equal(await connects(b, v), true, `${versionName(v)}: old keys still verify`);
  });

  it('VIGIL_JWKS_MAX_BYTES sets the cap', async () => {
    idp = await startJwksServer([key]);
    const b = (broker = await startBroker({ auth: 'jwt', jwks: idp.url, jwtAlgorithms: ['RS256'], jwksMaxBytes: 4096 }));
    const sent = idp.streamEndless(64 * MiB, 1024);
    assert.equal(await b.server.identity.jwks!.reload('manual'), false);
    assert.ok((await sent) < 64 * MiB);
    assert.match(b.server.identity.jwks!.lastError?.message ?? '', /larger than 4096 bytes/);
  });

  it('URL: {"keys":[]} and a set without a usable key keep the old keys, with an error logged', async () => {
    idp = await startJwksServer([key]);
    const b = (broker = await startBroker({ auth: 'jwt', jwks: idp.url, jwtAlgorithms: ['RS256'] }, { captureLogs: true }));
    for (const body of ['{"keys":[]}', JSON.stringify({ keys: [{ kty: 'oct', k: 'c2VjcmV0', kid: 'K1' }] })]) {
      idp.setBody(body);
      assert.equal(await b.server.identity.jwks!.reload('manual'), false, body);
      for (const v of VERSIONS) assert.equal(await connects(b, v), true, `${versionName(v)} after ${body}`);
    }
    assert.ok(b.logs.some((l) => l.msg === 'JWKS fetch failed; keeping the previous keys' && /no (usable )?signing key/.test(String(l.err))));
  });

  it('file: {"keys":[]} keeps the old keys, with an error logged', async () => {
    const path = await dir.write('jwks.json', jwksDocument([key]));
    const b = (broker = await startBroker({ auth: 'jwt', jwks: path, jwtAlgorithms: ['RS256'] }, { captureLogs: true }));
    for (const v of VERSIONS) assert.equal(await connects(b, v), true);
    await dir.write('jwks.json', '{"keys":[]}');
    await waitUntil(() => b.logs.some((l) => l.msg === 'JWKS file not loaded; keeping the previous keys'), 20000, 'the failed reload');
    for (const v of VERSIONS) assert.equal(await connects(b, v), true, `${versionName(v)}: old keys still verify`);
    assert.equal(b.server.identity.jwks!.describe().length, 1);
  });

  it('the http:// loopback-only rule ignores the case of the scheme', () => {
    for (const jwks of ['HTTP://idp.example/jwks.json', 'Http://10.0.0.1/jwks.json', 'http://idp.example/jwks.json']) {
      assert.throws(() => loadConfig({ env: { VIGIL_AUTH: 'jwt', VIGIL_JWKS: jwks } }), (err: unknown) => err instanceof ConfigError && /loopback only/.test(err.message), jwks);
    }
    assert.equal(loadConfig({ env: { VIGIL_AUTH: 'jwt', VIGIL_JWKS: 'HTTP://127.0.0.1:8080/jwks.json' } }).jwks, 'HTTP://127.0.0.1:8080/jwks.json');
  });
});
