import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AclPolicyError, clientIdDecision, compilePolicy, evaluate, evaluateReceive, parseTokenAcl, type AclSubject } from '../../../src/auth/acl.js';

const policy = compilePolicy({
  roles: {
    server: { publish: ['trusted/%u/#'], subscribe: ['trusted/%u/cmd/#'], deny: { publish: ['trusted/%u/secret'] } },
    monitor: { subscribe: ['trusted/+/dvs/server/state', 'trusted/+/dvs/#'] },
    device: { publish: ['devices/%c/telemetry'] },
    admin: { publish: ['#'], subscribe: ['#'] },
  },
  allow: { subscribe: ['public/#'] },
  deny: { publish: ['$SYS/#', 'trusted/+/forbidden'], subscribe: ['trusted/+/dvs/private/#'] },
});

const subject = (username: string, roles: string[], extra: Partial<AclSubject> = {}): AclSubject => ({ username, clientId: `${username}-c`, roles, ...extra });
const server = subject('x3000c0s9b0n0', ['server']);

describe('ACL policy', () => {
  it('grants by role with %u substitution and denies by default', () => {
    assert.equal(evaluate(policy, server, 'publish', 'trusted/x3000c0s9b0n0/dvs/server/state').allowed, true);
    const other = evaluate(policy, server, 'publish', 'trusted/someone-else/dvs/server/state');
    assert.deepEqual([other.allowed, other.reason], [false, 'no_grant']);
    assert.equal(evaluate(policy, subject('nobody', []), 'publish', 'anything').reason, 'no_grant');
  });

  it('lets deny rules win over allows, role and top level', () => {
    const roleDeny = evaluate(policy, server, 'publish', 'trusted/x3000c0s9b0n0/secret');
    assert.deepEqual([roleDeny.allowed, roleDeny.reason], [false, 'deny_rule']);
    assert.match(roleDeny.rule!, /roles\.server\.deny\.publish/);
    const admin = subject('root', ['admin']);
    assert.equal(evaluate(policy, admin, 'publish', 'a/b').allowed, true);
    assert.equal(evaluate(policy, admin, 'publish', '$SYS/broker/load').reason, 'deny_rule');
    assert.equal(evaluate(policy, admin, 'publish', 'trusted/x/forbidden').reason, 'deny_rule');
    assert.equal(evaluate(policy, subject('root', ['admin', 'server']), 'publish', 'trusted/root/secret').reason, 'deny_rule', 'a deny of one role beats an allow of another');
  });

  it('substitutes %c with the client id', () => {
    const dev = { username: 'd', clientId: 'sensor-17', roles: ['device'] };
    assert.equal(evaluate(policy, dev, 'publish', 'devices/sensor-17/telemetry').allowed, true);
    assert.equal(evaluate(policy, dev, 'publish', 'devices/sensor-18/telemetry').allowed, false);
  });

  it('never lets a username or client id with wildcards or separators widen a grant', () => {
    for (const username of ['#', '+', 'a/b', 'x/#', '', '$SYS']) {
      const s = subject(username, ['server']);
      for (const topic of ['trusted/a/b', 'trusted/x/y/z', 'trusted/#', 'trusted/+/q', 'trusted//q']) {
        assert.equal(evaluate(policy, s, 'publish', topic.includes('#') || topic.includes('+') ? 'trusted/q' : topic).allowed, false, `${username} ${topic}`);
      }
      assert.equal(evaluate(policy, s, 'subscribe', 'trusted/#').allowed, false, username);
      assert.equal(evaluate(policy, s, 'subscribe', `trusted/${username}/cmd/x`).allowed, false, username);
    }
    const dev = { username: 'd', clientId: '+', roles: ['device'] };
    assert.equal(evaluate(policy, dev, 'publish', 'devices/anyone/telemetry').allowed, false);
  });

  it('substitutes in one pass: a username or client id that is itself a placeholder stays literal', () => {
    const both = compilePolicy({ roles: { server: { publish: ['trusted/%u/#', 'devices/%c/%u', 'certs/%s/#'] } } });
    // CVE-2017-7650's class: "%c" as a username must not become the client id in a second pass
    const mallory = { username: '%c', clientId: 'bob', roles: ['server'] };
    assert.equal(evaluate(both, mallory, 'publish', 'trusted/bob/x').allowed, false);
    assert.equal(evaluate(both, mallory, 'publish', 'trusted/%c/x').allowed, true, 'her own, literal, topic');
    // each subject would gain these topics if an inserted value were substituted again
    const cases = [
      [{ username: '%u', clientId: 'bob' }, ['trusted/bob/x']],
      [{ username: '%s', clientId: 'c', certSubject: 'bob' }, ['trusted/bob/x']],
      [{ username: 'x%cy', clientId: 'bob' }, ['trusted/xboby/x']],
      [{ username: 'u', clientId: '%u' }, ['devices/u/u']],
      [{ username: 'u', clientId: 'c', certSubject: '%c' }, ['certs/c/x']],
    ] as const;
    for (const [who, topics] of cases) {
      for (const topic of topics) assert.equal(evaluate(both, { ...who, roles: ['server'] }, 'publish', topic).allowed, false, `${JSON.stringify(who)} ${topic}`);
    }
    assert.equal(evaluate(both, { username: 'u', clientId: '%u', roles: ['server'] }, 'publish', 'devices/%u/u').allowed, true);
    assert.equal(evaluate(both, { username: 'u', clientId: '%u', roles: ['server'] }, 'publish', 'devices/u/u').allowed, false);
  });

  it('authorizes subscriptions by filter coverage; a deny refuses only the filters it covers', () => {
    const mon = subject('m', ['monitor']);
    assert.equal(evaluate(policy, mon, 'subscribe', 'trusted/+/dvs/server/state').allowed, true);
    assert.equal(evaluate(policy, mon, 'subscribe', 'trusted/x/dvs/a/#').allowed, true);
    assert.equal(evaluate(policy, mon, 'subscribe', 'trusted/x/other/#').reason, 'no_grant', 'wider than any grant');
    assert.equal(evaluate(policy, mon, 'subscribe', 'trusted/#').allowed, false);
    assert.equal(evaluate(policy, mon, 'subscribe', 'trusted/+/dvs/#').allowed, true, 'overlapping trusted/+/dvs/private/# is no reason to refuse it');
    assert.equal(evaluate(policy, mon, 'subscribe', 'trusted/x/dvs/private/keys').reason, 'deny_rule');
    assert.equal(evaluate(policy, mon, 'subscribe', 'trusted/+/dvs/private/+').reason, 'deny_rule', 'covered by the deny: nothing could be delivered');
    // what the granted wildcard filter delivers is decided per topic
    assert.equal(evaluateReceive(policy, mon, 'trusted/x/dvs/state').allowed, true);
    assert.equal(evaluateReceive(policy, mon, 'trusted/x/dvs/private/keys').reason, 'deny_rule');
    assert.equal(evaluateReceive(policy, mon, 'trusted/x/other').reason, 'no_grant');
    assert.equal(evaluate(policy, mon, 'subscribe', 'public/news').allowed, true, 'top-level allow applies to everyone');
  });

  it('grants # and +/+ beside a deny rule; the denied topics are held back per message', () => {
    const admin = subject('root', ['admin']);
    for (const filter of ['#', '+/+', 'trusted/#', '$share/g/#']) assert.equal(evaluate(policy, admin, 'subscribe', filter).allowed, true, filter);
    assert.equal(evaluateReceive(policy, admin, 'trusted/a/dvs/state').allowed, true);
    assert.equal(evaluateReceive(policy, admin, 'trusted/a/dvs/private/k').reason, 'deny_rule');
    assert.equal(evaluateReceive(policy, admin, '$SYS/broker/uptime').reason, 'no_grant', '# grants no $ topic [MQTT-4.7.2-1]');
    // a token claim narrows deliveries as it narrows subscriptions
    const narrowed = subject('root', ['admin'], { tokenAcl: { subscribe: ['trusted/a/#'] } });
    assert.equal(evaluateReceive(policy, narrowed, 'trusted/a/x').allowed, true);
    assert.equal(evaluateReceive(policy, narrowed, 'trusted/b/x').reason, 'token_acl');
  });

  it('authorizes $share subscriptions on the inner filter', () => {
    const mon = subject('m', ['monitor']);
    assert.equal(evaluate(policy, mon, 'subscribe', '$share/g/trusted/+/dvs/server/state').allowed, true);
    assert.equal(evaluate(policy, mon, 'subscribe', '$share/g/trusted/#').allowed, false);
    assert.equal(evaluate(policy, mon, 'subscribe', '$share/g').reason, 'invalid_topic');
  });

  it('refuses invalid topics and filters', () => {
    assert.equal(evaluate(policy, server, 'publish', 'trusted/x3000c0s9b0n0/+').reason, 'invalid_topic');
    assert.equal(evaluate(policy, server, 'subscribe', 'trusted/#/x').reason, 'invalid_topic');
  });

  it('lets a token acl claim narrow, never widen, the role grants', () => {
    const narrowed = { ...server, tokenAcl: { publish: ['trusted/x3000c0s9b0n0/dvs/server/state'] } };
    assert.equal(evaluate(policy, narrowed, 'publish', 'trusted/x3000c0s9b0n0/dvs/server/state').allowed, true);
    assert.equal(evaluate(policy, narrowed, 'publish', 'trusted/x3000c0s9b0n0/other').reason, 'token_acl');
    assert.equal(evaluate(policy, narrowed, 'subscribe', 'trusted/x3000c0s9b0n0/cmd/a').reason, 'token_acl', 'a claim without subscribe grants no subscribe');
    const widening = { ...server, tokenAcl: { publish: ['#'] } };
    assert.equal(evaluate(policy, widening, 'publish', 'elsewhere/topic').reason, 'no_grant');
    assert.equal(evaluate(policy, widening, 'publish', 'trusted/x3000c0s9b0n0/secret').reason, 'deny_rule');
  });

  it('without a policy (jwt mode, no ACL file) grants only what the token claim grants', () => {
    assert.equal(evaluate(null, server, 'publish', 'trusted/x3000c0s9b0n0/a').reason, 'no_grant');
    const withClaim = { ...server, tokenAcl: { publish: ['trusted/x3000c0s9b0n0/#'], subscribe: ['cmd/+'] } };
    assert.equal(evaluate(null, withClaim, 'publish', 'trusted/x3000c0s9b0n0/a').allowed, true);
    assert.equal(evaluate(null, withClaim, 'publish', 'trusted/other/a').reason, 'token_acl');
    assert.equal(evaluate(null, withClaim, 'subscribe', 'cmd/x').allowed, true);
    assert.equal(evaluate(null, withClaim, 'subscribe', 'cmd/#').allowed, false);
  });

  it('ignores roles the policy does not define, including prototype names', () => {
    for (const role of ['unknown', 'constructor', '__proto__', 'toString']) {
      assert.equal(evaluate(policy, subject('u', [role]), 'publish', 'a').reason, 'no_grant');
    }
  });

  it('validates policy documents strictly', () => {
    assert.throws(() => compilePolicy({ roles: { a: { publsh: ['x'] } } }), AclPolicyError);
    assert.throws(() => compilePolicy({ roles: { a: { publish: ['a/#/b'] } } }), /not a valid topic filter/);
    assert.throws(() => compilePolicy({ roles: { a: { publish: 'x' } } }), /expected a list/);
    assert.throws(() => compilePolicy({ rules: {} }), /unknown key/);
    assert.throws(() => compilePolicy({ roles: { a: { subscribe: ['$share/g/x'] } } }), /inner filter/);
    assert.throws(() => compilePolicy({ version: 2 }), /version/);
    assert.throws(() => compilePolicy(['x']), AclPolicyError);
    assert.doesNotThrow(() => compilePolicy(null));
    assert.doesNotThrow(() => compilePolicy({ roles: { empty: null } }));
  });

  it('parses token acl claims', () => {
    assert.deepEqual(parseTokenAcl({ publish: ['a/#'] }), { publish: ['a/#'] });
    assert.equal(parseTokenAcl({ publish: 'a/#' }), undefined);
    assert.equal(parseTokenAcl({ publish: ['a/#/b'] }), undefined);
    assert.equal(parseTokenAcl({ write: ['a'] }), undefined);
    assert.equal(parseTokenAcl(['a']), undefined);
  });

  it('binds client ids to identities with clientIds patterns; without any that apply, every id is allowed', () => {
    const p = compilePolicy({
      roles: { device: { clientIds: ['%u', '%u-*', 'fleet-*-%u'] }, tls: { clientIds: ['cert-%s'] }, monitor: { subscribe: ['#'] }, locked: { clientIds: [] } },
    });
    const dev = (username: string, clientId: string) => clientIdDecision(p, { username, clientId, roles: ['device'] }, clientId).allowed;
    assert.equal(dev('alice', 'alice'), true);
    assert.equal(dev('alice', 'alice-'), true);
    assert.equal(dev('alice', 'alice-7'), true);
    assert.equal(dev('alice', 'fleet-x-alice'), true);
    assert.equal(dev('alice', 'fleet--alice'), true);
    for (const other of ['bob', 'alice7', 'xalice', 'fleet-alice', 'fleet-x-alicex', '']) assert.equal(dev('alice', other), false, other);
    // a value is literal text: a subject "*" or "%u" widens nothing, an empty one matches nothing
    assert.equal(dev('*', 'bob'), false);
    assert.equal(dev('*', '*'), true);
    assert.equal(dev('%u', 'bob'), false);
    assert.equal(dev('', ''), false);
    assert.equal(dev('', '-1'), false);
    const cert = (certSubject: string | undefined, clientId: string) => clientIdDecision(p, { username: 'u', clientId, certSubject, roles: ['tls'] }, clientId).allowed;
    assert.equal(cert('gw1', 'cert-gw1'), true);
    assert.equal(cert(undefined, 'cert-'), false);
    // no list applies: anything goes (backwards compatible); an empty list allows nothing
    assert.equal(clientIdDecision(p, { username: 'm', clientId: 'whatever', roles: ['monitor'] }, 'whatever').allowed, true);
    assert.equal(clientIdDecision(compilePolicy({ roles: { a: { publish: ['#'] } } }), { username: 'm', clientId: 'x', roles: ['a'] }, 'x').allowed, true);
    assert.equal(clientIdDecision(p, { username: 'm', clientId: 'm', roles: ['locked'] }, 'm').allowed, false);
    // roles add up; a top-level list applies to every client
    assert.equal(clientIdDecision(p, { username: 'alice', clientId: 'cert-gw', certSubject: 'gw', roles: ['device', 'tls'] }, 'cert-gw').allowed, true);
    const top = compilePolicy({ clientIds: ['%u'], roles: { monitor: { subscribe: ['#'] } } });
    assert.equal(clientIdDecision(top, { username: 'm', clientId: 'other', roles: ['monitor'] }, 'other').allowed, false);
    assert.equal(clientIdDecision(top, { username: 'm', clientId: 'm', roles: [] }, 'm').allowed, true);
    assert.throws(() => compilePolicy({ roles: { r: { clientIds: ['%c'] } } }), AclPolicyError);
    assert.throws(() => compilePolicy({ roles: { r: { clientIds: 'x' } } }), AclPolicyError);
    assert.throws(() => compilePolicy({ clientIds: [''] }), AclPolicyError);
  });
});
