// Valid credentials always get in: failed authentications are limited by what they cost (a
// signature check, per source address), never by the username they name — anyone can name a
// victim's username, nobody can guess its token. Real RS256 tokens, both protocol versions.
import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, uniqueId, VERSIONS, versionName, type Version } from '../helpers/mqtt.js';
import { jwksDocument, makeKey, malicious, signToken, tempDir, type TempDir, type TestKey } from '../helpers/jwt.js';

const CONNECT_MS = 15000; // a loaded CI machine verifies tokens slowly

let dir: TempDir;
let key: TestKey;
/** The attacker's own key pair, announcing the real key's kid: every forgery costs a signature check. */
let forger: TestKey;
let broker: TestBroker | undefined;
const pool = new ClientPool();

beforeEach(async () => {
  dir = await tempDir();
  key = await makeKey('K1', 'RS256');
  forger = await makeKey('K1', 'RS256');
});
afterEach(async () => {
  await pool.closeAll();
  await broker?.close();
  broker = undefined;
  await dir.remove();
});

async function jwtBroker(extra: Record<string, unknown> = {}): Promise<TestBroker> {
  broker = await startBroker({ auth: 'jwt', jwks: await dir.write('jwks.json', jwksDocument([key])), jwtAlgorithms: ['RS256'], ...extra });
  return broker;
}

const victimToken = () => signToken(key, { sub: 'victim', expiresInS: 3600 + Math.floor(Math.random() * 1000) }); // distinct: no cache hit
const forged = (n: number) => signToken(forger, { sub: 'victim', claims: { n } });
const as = (v: Version, token: string) => ({ protocolVersion: v, clientId: uniqueId('v'), username: 'victim', password: Buffer.from(token) });

describe('valid credentials always get in', { timeout: 120000 }, () => {
  for (const v of VERSIONS) {
    it(`${versionName(v)}: the victim's valid token connects during a brute-force run against its username`, async () => {
      const b = await jwtBroker();
      let attempts = 0;
      let stop = false;
      // bounded: at most 60 CONNECTs naming the victim, garbage and forged signatures mixed
      const attack = (async () => {
        for (let i = 0; i < 60 && !stop; i++) {
          const token = i % 4 === 0 ? await forged(i) : malicious.garbage[i % malicious.garbage.length];
          const err = await pool.connectRefused(b.url, as(v, token), CONNECT_MS);
          assert.ok(err.code !== undefined, 'refused with a CONNACK code');
          attempts++;
        }
      })();
      for (let i = 0; i < 5; i++) {
        const c = await pool.connect(b.url, as(v, await victimToken()), CONNECT_MS);
        assert.equal(c.mqtt.connected, true, `victim attempt ${i + 1}`);
        c.mqtt.end(true);
        while (attempts < (i + 1) * 10 && attempts < 60) await new Promise((r) => setTimeout(r, 10)); // interleave with the attack
      }
      stop = true;
      await attack;
      assert.ok(attempts >= 20, `the attack ran (${attempts} CONNECTs)`);
      assert.equal(await b.metric('vigil_limit_hits_total', { limit: 'auth_failures' }), 0, 'nothing was blocked: the forgeries stayed within the address budget');
    });
  }

  it('refusals that cost no signature check never count: 50 garbage tokens, then a fresh valid token', async () => {
    const b = await jwtBroker({ authFailuresPerAddress: 2 });
    for (let i = 0; i < 50; i++) assert.equal((await pool.connectRefused(b.url, as(5, malicious.garbage[i % malicious.garbage.length]), CONNECT_MS)).code, 0x86);
    assert.equal((await pool.connect(b.url, as(5, await victimToken()), CONNECT_MS)).mqtt.connected, true);
  });

  for (const v of VERSIONS) {
    it(`${versionName(v)}: an address over its budget of failed signature checks starts no new ones; a token already verified still gets in`, async () => {
      const b = await jwtBroker({ authFailuresPerAddress: 3 });
      const known = await victimToken();
      (await pool.connect(b.url, as(v, known), CONNECT_MS)).mqtt.end(true);
      for (let i = 0; i < 4; i++) assert.equal((await pool.connectRefused(b.url, as(v, await forged(i)), CONNECT_MS)).code, v === 5 ? 0x86 : 0x04);
      // blocked for new checks: a fifth forgery is refused before any crypto
      assert.equal((await pool.connectRefused(b.url, as(v, await forged(99)), CONNECT_MS)).code, v === 5 ? 0x9f : 0x03);
      assert.ok((await b.metric('vigil_limit_hits_total', { limit: 'auth_failures' })) >= 1);
      // the verified token costs nothing and connects
      assert.equal((await pool.connect(b.url, as(v, known), CONNECT_MS)).mqtt.connected, true);
    });
  }
});
