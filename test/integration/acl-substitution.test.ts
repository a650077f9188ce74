// Policy placeholders are substituted in one pass over the rule text: an identity whose name is
// itself a placeholder (a subject literally "%c") gains nothing from it (docs/acl.md,
// "Substitution"; the class of Mosquitto's CVE-2017-7650). Real RS256 tokens, both versions.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, subackCodes, uniqueId, VERSIONS, versionName } from '../helpers/mqtt.js';
import { jwksDocument, makeKey, signToken, tempDir, type TempDir, type TestKey } from '../helpers/jwt.js';

const POLICY = { roles: { server: { publish: ['trusted/%u/#'], subscribe: ['trusted/%u/#'] } } };

describe('ACL substitution in one pass', { timeout: 30000 }, () => {
  let dir: TempDir;
  let key: TestKey;
  let broker: TestBroker;
  const pool = new ClientPool();
  before(async () => {
    dir = await tempDir();
    key = await makeKey('K1', 'RS256');
    broker = await startBroker({ auth: 'jwt', jwks: await dir.write('jwks.json', jwksDocument([key])), acl: await dir.write('acl.json', POLICY), jwtAlgorithms: ['RS256'] });
  });
  after(async () => {
    await pool.closeAll();
    await broker.close();
    await dir.remove();
  });
  const token = async (sub: string) => Buffer.from(await signToken(key, { sub, claims: { roles: ['server'] } }));

  for (const v of VERSIONS) {
    it(`${versionName(v)}: a subject that is literally "%c", connected as client id "bob", gets nothing of bob's`, async () => {
      const bob = await pool.connect(broker.url, { protocolVersion: v, clientId: uniqueId('bob-device'), username: 'bob', password: await token('bob') });
      await bob.mqtt.subscribeAsync('trusted/bob/#', { qos: 1 });

      const mallory = await pool.connect(broker.url, { protocolVersion: v, clientId: 'bob', username: '%c', password: await token('%c') });
      const [code] = await subackCodes(mallory.mqtt, { 'trusted/bob/#': { qos: 1 } });
      assert.ok(code >= 0x80, `subscription to bob's topics refused, got 0x${code.toString(16)}`);
      // her publish to bob's topic is dropped (3.1.1 acks it, 5.0 says 0x87); bob only sees his own marker
      await mallory.mqtt.publishAsync('trusted/bob/cmd', 'forged', { qos: 1 }).catch(() => undefined);
      // her own, literal, topic is hers
      assert.deepEqual(await subackCodes(mallory.mqtt, { 'trusted/%c/#': { qos: 1 } }), [1]);
      await bob.mqtt.publishAsync('trusted/bob/marker', 'marker', { qos: 1 });
      const [first] = await bob.waitForMessages(1, 10000);
      assert.equal(first.payload, 'marker');
      assert.equal(bob.messages.filter((m) => m.payload === 'forged').length, 0);
    });
  }
});
