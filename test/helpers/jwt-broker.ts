// One JWT-mode broker per test, as the identity tests use it: a temporary directory holding a
// JWKS with one RS256 key and the policy file, mqtt.js clients, and hooks that close all of
// it after each test. Call `jwtBrokerFixture()` at the top level of a test file.
import { afterEach, beforeEach } from 'node:test';
import type { Config } from '../../src/config.js';
import { startBroker, type StartOptions, type TestBroker } from './broker.js';
import { jwksDocument, makeKey, signToken, tempDir, type TempDir, type TestKey } from './jwt.js';
import { ClientPool } from './mqtt.js';

export interface JwtBrokerFixture {
  readonly clients: ClientPool;
  /** The test's temporary directory (jwks.json, acl.json). */
  readonly dir: TempDir;
  /** The RS256 key the JWKS serves. */
  readonly key: TestKey;
  /** The broker the last `start` made (closed after the test). */
  readonly broker: TestBroker | undefined;
  /** Writes the JWKS and the policy and starts a broker in jwt mode (RS256 only). */
  start(policy: object, overrides?: Partial<Config>, options?: StartOptions): Promise<TestBroker>;
  /** A fresh token for `sub` with these roles, as an MQTT password. */
  password(sub: string, roles: readonly string[]): Promise<Buffer>;
}

export function jwtBrokerFixture(kid = 'KEY-A'): JwtBrokerFixture {
  let dir: TempDir | undefined;
  let key: TestKey | undefined;
  let broker: TestBroker | undefined;
  const clients = new ClientPool();

  beforeEach(async () => {
    dir = await tempDir();
    key = await makeKey(kid, 'RS256');
  });
  afterEach(async () => {
    await clients.closeAll();
    await broker?.close();
    broker = undefined;
    await dir?.remove();
  });

  const need = <T>(value: T | undefined, what: string): T => {
    if (value === undefined) throw new Error(`jwtBrokerFixture: ${what} is made in beforeEach; use it inside a test`);
    return value;
  };

  return {
    clients,
    get dir() {
      return need(dir, 'the directory');
    },
    get key() {
      return need(key, 'the key');
    },
    get broker() {
      return broker;
    },
    async start(policy, overrides = {}, options = {}) {
      const d = need(dir, 'the directory');
      const jwks = await d.write('jwks.json', jwksDocument([need(key, 'the key')]));
      const acl = await d.write('acl.json', policy);
      broker = await startBroker({ auth: 'jwt', jwks, acl, jwtAlgorithms: ['RS256'], ...overrides }, options);
      return broker;
    },
    async password(sub, roles) {
      return Buffer.from(await signToken(need(key, 'the key'), { sub, claims: { roles: [...roles] } }));
    },
  };
}
