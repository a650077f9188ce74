import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createIdentity, type Identity, type Verdict } from '../../../src/auth/index.js';
import { makeKey, signToken, tempDir } from '../../helpers/jwt.js';
import { captureLogger, identityConfig, metricValue, testMetrics, waitFor } from './support.js';

const POLICY_V1 = `
roles:
  server:
    publish: ["trusted/%u/#"]
    deny:
      publish: ["trusted/%u/secret"]
  monitor:
    subscribe: ["trusted/+/dvs/server/state"]
deny:
  publish: ["$SYS/#"]
`;
const POLICY_V2 = `
roles:
  server:
    publish: ["trusted/%u/dvs/#"]
  monitor:
    subscribe: ["trusted/+/dvs/#"]
`;

function identityOf(username: string, roles: string[], extra: Partial<Identity> = {}): Identity {
  return { username, clientId: `${username}-client`, roles, authenticatedAtMs: Date.now(), ...extra };
}

describe('authorizer', () => {
  it('keeps steady-state publishing off the pool: 10,000 checks after the first do no pool work', async () => {
    const dir = await tempDir();
    const metrics = testMetrics();
    const identity = await createIdentity(identityConfig({ auth: 'none', acl: await dir.write('acl.yaml', POLICY_V1) }), metrics, captureLogger().logger);
    try {
      const server = identityOf('x3000c0s9b0n0', ['server']);
      const first = identity.authorizer.check(server, 'publish', 'trusted/x3000c0s9b0n0/dvs/server/state');
      assert.ok(first instanceof Promise, 'a miss goes to the pool');
      assert.deepEqual(await first, { allowed: true });
      assert.equal(identity.pool.tasksSubmitted('evaluateAcl'), 1);
      for (let i = 0; i < 10_000; i++) {
        const v = identity.authorizer.check(server, 'publish', 'trusted/x3000c0s9b0n0/dvs/server/state');
        assert.ok(!(v instanceof Promise) && v.allowed);
      }
      assert.equal(identity.pool.tasksSubmitted('evaluateAcl'), 1, 'no pool task for cached verdicts');
      assert.equal(await metricValue(metrics, 'aclVerdictCacheTotal', { result: 'hit' }), 10_000);

      // Denials are cached and counted too.
      assert.deepEqual(await identity.authorizer.check(server, 'publish', 'trusted/x3000c0s9b0n0/secret'), { allowed: false, reason: 'deny_rule' });
      assert.deepEqual(identity.authorizer.check(server, 'publish', 'trusted/x3000c0s9b0n0/secret'), { allowed: false, reason: 'deny_rule' });
      assert.equal(await metricValue(metrics, 'aclDeniesTotal', { action: 'publish' }), 2);

      // A re-authenticated session carries a new Identity object: it starts with an empty cache.
      const reauthed = { ...server };
      const again = identity.authorizer.check(reauthed, 'publish', 'trusted/x3000c0s9b0n0/dvs/server/state');
      assert.ok(again instanceof Promise);
      assert.equal((await again).allowed, true);
    } finally {
      await identity.close();
      await dir.remove();
    }
  });

  it('shares one pool task between concurrent misses for the same question', async () => {
    const dir = await tempDir();
    const identity = await createIdentity(identityConfig({ auth: 'none', acl: await dir.write('acl.yaml', POLICY_V1) }), testMetrics(), captureLogger().logger);
    try {
      const mon = identityOf('m', ['monitor']);
      const verdicts = await Promise.all(Array.from({ length: 20 }, () => identity.authorizer.check(mon, 'subscribe', 'trusted/+/dvs/server/state')));
      assert.ok(verdicts.every((v) => v.allowed));
      assert.equal(identity.pool.tasksSubmitted('evaluateAcl'), 1);
    } finally {
      await identity.close();
      await dir.remove();
    }
  });

  it('the misses of one turn go to the pool together: 200 identities\' questions in a few evaluateAcls tasks, each answered for its own identity', async () => {
    const dir = await tempDir();
    const metrics = testMetrics();
    const identity = await createIdentity(identityConfig({ auth: 'none', acl: await dir.write('acl.yaml', POLICY_V1) }), metrics, captureLogger().logger);
    try {
      const ids = Array.from({ length: 200 }, (_, i) => identityOf(`u${i}`, ['server']));
      // its own topic (allowed), its own secret (a deny rule), and a neighbour's topic (no rule)
      const asked = ids.flatMap((id, i) => [
        identity.authorizer.check(id, 'publish', `trusted/u${i}/state`),
        identity.authorizer.check(id, 'publish', `trusted/u${i}/secret`),
        identity.authorizer.check(id, 'publish', `trusted/u${(i + 1) % 200}/state`),
      ]);
      assert.ok(asked.every((v) => v instanceof Promise), 'every question is a miss');
      const verdicts = await Promise.all(asked);
      assert.deepEqual(verdicts.map((v) => v.allowed), ids.flatMap(() => [true, false, false]));
      assert.equal(identity.pool.tasksSubmitted('evaluateAcl'), 600, 'questions are counted one by one');
      const tasks = await metricValue(metrics, 'authPoolTasksTotal', { task: 'evaluateAcls' });
      assert.ok(tasks >= 1 && tasks <= 12, `600 questions of one turn in a few tasks of up to 64, not one each: ${tasks}`);
      // and one question alone still gets its answer
      assert.equal((await identity.authorizer.check(identityOf('late', ['server']), 'publish', 'trusted/late/x')).allowed, true);
    } finally {
      await identity.close();
      await dir.remove();
    }
  });

  it('flips verdicts when the policy file changes, and keeps the old policy when the new one is broken', async () => {
    const dir = await tempDir();
    const metrics = testMetrics();
    const { logger, lines } = captureLogger();
    const path = await dir.write('acl.yaml', POLICY_V1);
    const identity = await createIdentity(identityConfig({ auth: 'none', acl: path }), metrics, logger, { watchIntervalMs: 30 });
    try {
      const server = identityOf('s1', ['server']);
      const mon = identityOf('m1', ['monitor']);
      assert.equal((await identity.authorizer.check(server, 'publish', 's1/other')).allowed, false);
      assert.equal((await identity.authorizer.check(server, 'publish', 'trusted/s1/status')).allowed, true);
      assert.equal((await identity.authorizer.check(mon, 'subscribe', 'trusted/+/dvs/#')).allowed, false);
      const generation = identity.authorizer.generation;

      await dir.write('acl.yaml', POLICY_V2);
      await waitFor(() => identity.authorizer.generation > generation, 5000, 'policy reload');
      assert.equal((await identity.authorizer.check(server, 'publish', 'trusted/s1/status')).allowed, false, 'grant narrowed');
      assert.equal((await identity.authorizer.check(server, 'publish', 'trusted/s1/dvs/state')).allowed, true);
      assert.equal((await identity.authorizer.check(mon, 'subscribe', 'trusted/+/dvs/#')).allowed, true, 'grant widened');

      const reloaded = identity.authorizer.generation;
      await dir.write('acl.yaml', 'roles:\n  server:\n    publsh: ["#"]\n');
      await waitFor(async () => (await metricValue(metrics, 'aclReloadsTotal', { outcome: 'error' })) >= 1, 5000, 'failed reload');
      assert.equal(identity.authorizer.generation, reloaded);
      assert.deepEqual(identity.authorizer.check(server, 'publish', 'trusted/s1/dvs/state'), { allowed: true }, 'old policy (and its cache) kept');
      assert.ok(lines.some((l) => l.includes('ACL policy not reloaded') && l.includes('publsh')));
      assert.equal(await metricValue(metrics, 'aclReloadsTotal', { outcome: 'ok' }), 2);
    } finally {
      await identity.close();
      await dir.remove();
    }
  });

  it('denies revoked identities at once and bumps the generation', async () => {
    const dir = await tempDir();
    const identity = await createIdentity(identityConfig({ auth: 'none', acl: await dir.write('acl.json', JSON.stringify({ roles: { anonymous: { publish: ['#'] } } })) }), testMetrics(), captureLogger().logger);
    try {
      const who = identityOf('dev-9', ['anonymous']);
      assert.equal((await identity.authorizer.check(who, 'publish', 'a/b')).allowed, true);
      const generation = identity.authorizer.generation;
      await identity.revocations.revokeSubject('dev-9');
      assert.ok(identity.authorizer.generation > generation);
      assert.deepEqual(identity.authorizer.check(who, 'publish', 'a/b'), { allowed: false, reason: 'revoked' });
      assert.equal(identity.authorizer.explain(who, 'publish', 'a/b').reason, 'revoked');
      assert.equal((await identity.authorizer.check(identityOf('dev-10', ['anonymous']), 'publish', 'a/b')).allowed, true);
    } finally {
      await identity.close();
      await dir.remove();
    }
  });

  it('evaluates on the main thread instead of queueing when the pool is saturated', async () => {
    const dir = await tempDir();
    const identity = await createIdentity(
      identityConfig({ auth: 'none', authWorkers: 1, authQueueMax: 1, acl: await dir.write('acl.yaml', POLICY_V1) }),
      testMetrics(),
      captureLogger().logger,
    );
    try {
      const server = identityOf('s', ['server']);
      const verdicts = Array.from({ length: 30 }, (_, i) => identity.authorizer.check(server, 'publish', `trusted/s/t${i}`));
      assert.ok(verdicts.filter((v) => !(v instanceof Promise)).length >= 20);
      assert.ok((await Promise.all(verdicts)).every((v: Verdict) => v.allowed));
    } finally {
      await identity.close();
      await dir.remove();
    }
  });

  it('in jwt mode without a policy file grants only what the token acl claim grants', async () => {
    const dir = await tempDir();
    const key = await makeKey('k1');
    const { logger, lines } = captureLogger();
    const identity = await createIdentity(identityConfig({ jwks: await dir.write('jwks.json', { keys: [key.jwk] }) }), testMetrics(), logger);
    try {
      assert.ok(lines.some((l) => l.includes('without VIGIL_ACL')));
      assert.equal(identity.authorizer.allowAll, false);
      const plain = await identity.authenticator.authenticate({ clientId: 'c', password: Buffer.from(await signToken(key, { sub: 'u1', claims: { roles: ['admin'] } })), protocolVersion: 5, remoteAddress: '::1' });
      assert.ok(plain.ok);
      assert.deepEqual(await identity.authorizer.check(plain.identity, 'publish', 'any/topic'), { allowed: false, reason: 'no_grant' });
      const scoped = await identity.authenticator.authenticate({ clientId: 'c', password: Buffer.from(await signToken(key, { sub: 'u2', claims: { acl: { publish: ['trusted/u2/#'] } } })), protocolVersion: 5, remoteAddress: '::1' });
      assert.ok(scoped.ok);
      assert.equal((await identity.authorizer.check(scoped.identity, 'publish', 'trusted/u2/state')).allowed, true);
      assert.equal((await identity.authorizer.check(scoped.identity, 'publish', 'trusted/u3/state')).allowed, false);
    } finally {
      await identity.close();
      await dir.remove();
    }
  });

  it('authorizes a will at fire time on the identity snapshot, after the token expired and its key was rotated out', async () => {
    // The seed issue: a server's will is refused because its JWT key was rotated. Vigil judges
    // the will on who the client proved to be and on the current policy and revocations.
    const dir = await tempDir();
    const keyA = await makeKey('KEY-A');
    const keyB = await makeKey('KEY-B');
    let now = Date.now();
    const jwks = await dir.write('jwks.json', { keys: [keyA.jwk, keyB.jwk] });
    const identity = await createIdentity(identityConfig({ jwks, acl: await dir.write('acl.yaml', POLICY_V1) }), testMetrics(), captureLogger().logger, { now: () => now });
    try {
      const out = await identity.authenticator.authenticate({
        clientId: 'x3000c0s9b0n0', username: 'x3000c0s9b0n0', protocolVersion: 4, remoteAddress: '127.0.0.1',
        password: Buffer.from(await signToken(keyA, { sub: 'x3000c0s9b0n0', expiresInS: 60, claims: { roles: ['server'] } })),
      });
      assert.ok(out.ok);
      await dir.write('jwks.json', { keys: [keyB.jwk] });
      await identity.jwks!.reload('manual');
      now += 3600_000;
      assert.deepEqual(await identity.authorizer.check(out.identity, 'publish', 'trusted/x3000c0s9b0n0/dvs/server/state'), { allowed: true });
      assert.equal((await identity.authorizer.check(out.identity, 'publish', 'trusted/someone-else/dvs/server/state')).allowed, false, 'still only its own topics');
      await identity.revocations.revokeSubject('x3000c0s9b0n0');
      assert.deepEqual(identity.authorizer.check(out.identity, 'publish', 'trusted/x3000c0s9b0n0/dvs/server/state'), { allowed: false, reason: 'revoked' });
    } finally {
      await identity.close();
      await dir.remove();
    }
  });

  it('allows everything with auth=none and no policy file', async () => {
    const identity = await createIdentity(identityConfig({ auth: 'none' }), testMetrics(), captureLogger().logger);
    try {
      assert.equal(identity.authorizer.allowAll, true);
      assert.deepEqual(identity.authorizer.check(identityOf('', ['anonymous']), 'subscribe', '#'), { allowed: true });
      assert.equal(identity.pool.tasksSubmitted('evaluateAcl'), 0);
    } finally {
      await identity.close();
    }
  });
});
